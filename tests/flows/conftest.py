"""Fixtures of the flow tests: a real Prefect server that can be stopped and started again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


class PrefectServer(str):
    """The API URL of a real `prefect server start` (a str, so it can be used as the URL), with
    `stop()` and `start()` for an outage: the server's database (its PREFECT_HOME) survives."""

    def __new__(cls, port: int, home: Path) -> PrefectServer:
        server = super().__new__(cls, f"http://127.0.0.1:{port}/api")
        server.port, server.home, server.process = port, home, None
        return server

    def start(self, timeout: float = 240) -> None:
        env = dict(os.environ, PREFECT_HOME=str(self.home), PREFECT_UI_ENABLED="false",
                   PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="2")
        env.pop("PREFECT_API_URL", None)
        log = open(self.home.parent / "prefect-server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                         "--port", str(self.port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self}/health", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.home.parent / "prefect-server.log").read_text()[-3000:]) from None
                time.sleep(0.5)

    def running(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self}/health", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def _shared_prefect_server(tmp_path_factory) -> PrefectServer:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = PrefectServer(port, tmp_path_factory.mktemp("prefect") / "prefect-home")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefect_server(_shared_prefect_server) -> PrefectServer:
    """A real `prefect server start` (the test harness runs no services, so expired leases of
    killed workers would never be revoked there; a production server revokes them). One per
    session — starting one costs ≈ 17 s here — started again if a test left it stopped."""
    if not _shared_prefect_server.running():
        _shared_prefect_server.start()
    return _shared_prefect_server
