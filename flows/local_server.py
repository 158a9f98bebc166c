"""A local Prefect server for the demo and for operators without one: started once, left running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_PORT = 4200


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def ensure_local_server(log_dir: Path, port: int = DEFAULT_PORT, timeout_s: float = 180) -> str:
    """The API URL of a Prefect server on this machine, starting one in the background if needed.

    An operator's own PREFECT_API_URL always wins. The server started here keeps running after
    avatarflow exits, so the UI stays available; `prefect server stop` ends it.
    """
    # Prefect is imported in these functions, not at the top: the CLI imports this module at
    # start-up, and Prefect's two seconds of import belong only to the commands that use it.
    from prefect.settings import PREFECT_API_URL

    configured = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()  # env or profile
    if configured:
        return configured
    api_url = f"http://127.0.0.1:{port}/api"
    if not _healthy(api_url):
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / "prefect-server.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
        subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                          "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not _healthy(api_url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start within {timeout_s:.0f} s; "
                                   f"see {log_dir / 'prefect-server.log'}")
            time.sleep(1)
    os.environ["PREFECT_API_URL"] = api_url  # for child processes
    return api_url


@contextmanager
def using_server(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at `api_url` (settings are read once, so the
    environment alone is not enough once Prefect has been imported)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield
