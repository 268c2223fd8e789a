import os
import warnings

import numpy as np
import pytest
import torch

# two cores: one torch thread per pytest-xdist worker (two workers), two without them
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

# the longest files first, so that `-n 2 --dist loadfile --no-loadscope-reorder` does not
# end on one of them alone (xdist's own order, the most tests first, left the demo to the
# end, where it ran alone for 78 s: 306 s in all against 297 s). Seconds measured in one
# run: the demo 112-144, the docs' examples 44-60, distributed 52, many levels 34, ...
SLOW_FIRST = ("test_demo.py", "test_docs_examples.py", "test_distributed.py",
              "test_many_levels.py", "test_integrations.py", "test_faults.py",
              "test_card_cli.py", "test_tracking.py", "test_attribution_maps.py",
              "test_mitigation.py", "test_browser.py", "test_evidence.py", "test_monai.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept


@pytest.fixture(scope="session")
def digits_std():
    """Real data: scikit-learn's digits, standardised (1797 x 64)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    sd = X.std(0)
    X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    return X, y


@pytest.fixture(autouse=True)
def _fresh_mlflow_globals(monkeypatch):
    """MLflow keeps a process-wide tracking URI, active experiment (also exported as
    MLFLOW_EXPERIMENT_ID) and run stack, which Lightning's MLFlowLogger and HF's
    MLflowCallback set: each test starts clean and leaves nothing behind."""
    import os
    import sys

    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    if "mlflow" in sys.modules:
        import mlflow.tracking._tracking_service.utils as tracking_utils
        from mlflow.tracking import fluent

        monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
        monkeypatch.setattr(fluent, "_active_experiment_id", None)
    yield
    if "mlflow" in sys.modules:
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        import mlflow.tracking._tracking_service.utils as tracking_utils
        from mlflow.tracking import fluent

        tracking_utils._tracking_uri = None
        fluent._active_experiment_id = None
    for k in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if k not in saved:
            del os.environ[k]
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _quiet_audit_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        yield


@pytest.fixture(scope="session")
def shortcut_model():
    """Induced-shortcut CNNs on real digits, trained once per session: ``get(bias)`` ->
    ``(model, split)`` (split seed 0, so all biases share their audit images)."""
    from wsca_audit.demo.shortcut import make_split, train_cnn

    cache = {}

    def get(bias):
        if bias not in cache:
            split = make_split(bias, seed=0)
            cache[bias] = (train_cnn(split.train_x, split.train_y, seed=0), split)
        return cache[bias]

    return get


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="session")
def small_result(digits_std):
    """A real (fast) audit of digits: a categorical with an awkward name and a continuous."""
    import wsca_audit as wa

    X, y = digits_std
    X, label = X[:400, :20], (y[:400] >= 5).astype(int)
    rng = np.random.default_rng(0)
    site = np.where(rng.random(400) < 0.8, label, 1 - label)
    W = np.linalg.lstsq(X, np.c_[-(label - 0.5), label - 0.5], rcond=None)[0].T
    return wa.analyze(
        X,
        label,
        {"scanner id/ü": site, "ink": X[:, :5].sum(1)},
        primary_weight=W,
        n_bootstrap=30,
        n_permutations=30,
        progress=False,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` process (sqlite backend, temp artifact root) on 127.0.0.1."""

    def __init__(self, root, port=None):
        self.root = root
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout=120):
        import subprocess
        import sys
        import time
        import urllib.request
        from pathlib import Path

        mlflow = Path(sys.executable).with_name("mlflow")
        self.log = open(self.root / f"server-{self.port}.log", "ab")
        # without MLflow's job runner (a third process importing mlflow): no test runs jobs
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(mlflow), "server",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--default-artifact-root", str(self.root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not answer within {timeout} s")

    def kill(self):
        import os
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        if getattr(self, "log", None):
            self.log.close()

    def get(self, endpoint, **params):
        import json
        import urllib.parse
        import urllib.request

        url = f"{self.uri}/{endpoint}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if endpoint.startswith("api/") else body


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.kill()


def find_browser():
    """Debian's chromium (or another Chrome); skip if absent unless CI requires it."""
    import os
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("WSCA_REQUIRE_BROWSER") == "1":
        pytest.fail("WSCA_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
    pytest.skip("no chromium on PATH (set WSCA_REQUIRE_BROWSER=1 to make this a failure)")


def run_browser(url, *, dump_dom=False, screenshot=None, budget_ms=20000, size="1400,1100"):
    import subprocess

    args = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--disable-background-networking", "--no-first-run",
            "--hide-scrollbars", f"--window-size={size}", f"--virtual-time-budget={budget_ms}"]  # fmt: skip
    if screenshot:
        args.append(f"--screenshot={screenshot}")
    if dump_dom:
        args.append("--dump-dom")
    out = subprocess.run([*args, url], capture_output=True, timeout=120, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout
