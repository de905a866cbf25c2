"""Real servers for the service tests: uvicorn subprocesses on free loopback ports, a real redis-server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSCILLINK_")}
    pp = [str(ROOT), str(ROOT / "integrations")]
    env.update(PYTHONPATH=os.pathsep.join(pp + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OSCILLINK_PRELOAD_MODEL="0", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.update(extra)
    return env


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oscillink_core.app.cli", *map(str, args)], env=env or base_env(),
                          capture_output=True, text=True, timeout=120)


def create_key(state_args: list[str], name: str = "test", **limits) -> tuple[str, dict]:
    flags = []
    for k, v in limits.items():
        flags += [f"--{k.replace('_', '-')}", str(v)]
    r = cli("keys", "create", "--name", name, "--json", *flags, *state_args)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    return rec.pop("key"), rec


class Server:
    """``oscillink serve`` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, state_args: list[str], *args: str, **env: str) -> None:
        self.state_args, self.args, self.env = state_args, list(args), env
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="oscillink-serve-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oscillink_core.app.cli", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), *self.state_args, *self.args], env=base_env(**self.env), stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.read_log()}")

    def read_log(self) -> str:
        return Path(self.log.name).read_text("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL: the process dies mid-request, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (make setup installs it: apt-get install -y redis-server)")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(d), "--protected-mode", "yes"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            r.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def redis_db(redis_url):
    """A fresh Redis database (flushed) for one test."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/1"
    r = redis.Redis.from_url(url)
    r.flushdb()
    yield url, r
    r.flushdb()
    r.close()


def vectors(n: int, d: int, seed: int = 0) -> tuple[list, list]:
    import numpy as np

    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(n, d)).astype("float32")
    return Y.tolist(), (Y[0] + 0.1 * rng.normal(size=d)).astype("float32").tolist()
