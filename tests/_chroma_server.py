"""A real Chroma server for the tests: ``chroma run`` (package ``chromadb``) on a free loopback port.

`start_chroma` starts it in a temporary directory, waits until its heartbeat answers and returns
a handle; `ChromaServer.stop` terminates it. Telemetry is off and no embedding function is ever
left to Chroma's default (which would download a model): tests always pass vectors.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ChromaServer:
    host: str
    port: int
    proc: subprocess.Popen
    path: Path

    @property
    def url(self) -> str:
        return f"chroma://{self.host}:{self.port}"

    def client(self):
        import chromadb
        from chromadb.config import Settings

        return chromadb.HttpClient(host=self.host, port=self.port, settings=Settings(anonymized_telemetry=False))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        shutil.rmtree(self.path, ignore_errors=True)


def _chroma_binary() -> str:
    cand = Path(sys.executable).with_name("chroma")
    if cand.exists():
        return str(cand)
    found = shutil.which("chroma")
    if found is None:
        raise RuntimeError("the chroma command (package chromadb) is not installed")
    return found


def start_chroma(ready_within_s: float = 120.0) -> ChromaServer:
    path = Path(tempfile.mkdtemp(prefix="oscillink-chroma-"))
    port = free_port()
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    log = open(path / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([_chroma_binary(), "run", "--host", "127.0.0.1", "--port", str(port), "--path",
                             str(path / "db")], stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ChromaServer("127.0.0.1", port, proc, path)
    deadline = time.monotonic() + ready_within_s  # a readiness bound, not a timing assertion
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"chroma run exited with {proc.returncode}: {(path / 'server.log').read_text()[-2000:]}")
        try:
            server.client().heartbeat()
            return server
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"chroma run did not answer on port {port} within {ready_within_s} s") from None
            time.sleep(0.2)
