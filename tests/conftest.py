"""Shared fixtures: composing the real configs with tiny, CPU-only, offline settings."""

import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import snc.config  # noqa: F401  (registers the config schemas)

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")

# A tiny WRN on a tiny synthetic set: each epoch takes a fraction of a second on CPU.
TINY = [
    "device=cpu",
    "logger=none",
    "progress=false",
    "backbone=wrn16_2",
    "+backbone.overrides.depth=10",
    "+backbone.overrides.widen_factor=1",
    "dataset=synthetic",
    "dataset.num_train=256",
    "dataset.num_test=64",
    "batch_size=32",
    "eval_batch_size=64",
    "epochs=2",
    "log_every=4",
]


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides)`` -> a composed config writing under ``tmp_path``."""

    def make(*overrides, tiny=True, name="train"):
        base = TINY if tiny else ["device=cpu", "logger=none"]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(name, overrides=[
                f"paths.output_dir={tmp_path / 'outputs'}",
                f"paths.data_dir={tmp_path / 'data'}",
                *base, *overrides])

    return make


@pytest.fixture
def kill_run(monkeypatch):
    """``kill_run(cfg, at=n)``: runs ``cfg`` and stops it as a kill would, at the start of its
    ``n``-th training period (1-based); the engine is restored afterwards."""
    from snc.engine import run, runner

    def kill(cfg, at: int) -> None:
        real, calls = runner.train_steps, {"n": 0}

        def dying(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        monkeypatch.setattr(runner, "train_steps", dying)
        try:
            with pytest.raises(KeyboardInterrupt):
                run(cfg)
        finally:
            monkeypatch.setattr(runner, "train_steps", real)

    return kill


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from a folder, honouring 'Range: bytes=N-' as a resuming server does."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        data = open(path, "rb").read()
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            partial(RangeHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
