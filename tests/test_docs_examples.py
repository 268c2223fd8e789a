"""The examples of docs/integrations.md run as written (each in a fresh process)."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "integrations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


# each integration the doc describes, and the name its example must use
SHOWN = {"plain": "audit_loop", "lightning": "WSCACallback",
         "transformers": "WSCATrainerCallback", "ddp": "init_process_group",
         "monai": "MetaTensor(", "monai_bundle": "configs/evaluate.json"}  # fmt: skip


def test_every_integration_has_a_runnable_example():
    """Each integration of the doc is shown by an example of its own (all of them run
    below), so an example cannot silently go missing."""
    for name, call in SHOWN.items():
        holders = [i for i, block in enumerate(BLOCKS) if call in block]
        assert holders, f"docs/integrations.md shows no {name} example ({call})"


def _run(block: str, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "example.py"
    script.write_text(block)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RANK"))}
    env["OMP_NUM_THREADS"] = "1"  # two examples at once beside the other test worker: 2 cores
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """Every example started at once, two at a time (the machine has two cores; each
    spends most of its time importing torch and its framework): each test then waits
    for its own."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            i: pool.submit(_run, block, tmp_path_factory.mktemp(f"example{i}"))
            for i, block in enumerate(BLOCKS)
        }


@pytest.mark.slow
@pytest.mark.parametrize(
    "index",
    range(len(BLOCKS)),
    ids=[next((n for n, c in SHOWN.items() if c in b), f"block{i}") for i, b in enumerate(BLOCKS)],
)
def test_doc_example_runs(index, started):
    out = started[index].result()
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "site" in out.stdout
