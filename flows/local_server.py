"""The local Prefect server that avatarflow starts for operators without one of their own.

`avatarflow server start | stop | status` manage it; `run`, `deliver` and `demo` start it when
no PREFECT_API_URL is set. It runs `prefect server start` in a session of its own (its own
process group), writes its output to `<data root>/logs/prefect-server.log`, and avatarflow keeps
its pid, port and start time in `<data root>/prefect-server.json`, so `stop` ends exactly what
avatarflow started (the whole process group: SIGTERM, then SIGKILL after a grace period). The
pid also goes to Prefect's own pid file (PREFECT_HOME/server.pid), so `prefect server stop`
stops it too.

Why not `prefect server start --background`: it sends the server's output into a pipe nobody
reads (a chatty server blocks once the pipe fills) and keeps no log to read when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from avatarflow.errors import ConfigurationError
from avatarflow.settings import Settings

STATE_FILE = "prefect-server.json"
LOG_FILE = "prefect-server.log"


@dataclass(frozen=True)
class ServerStatus:
    """What is answering at the API URL avatarflow would use, and who started it."""

    api_url: str
    healthy: bool
    source: str  # "PREFECT_API_URL" (the operator's own), "avatarflow" (ours) or "none"/"other"
    pid: int | None = None
    started_at: float | None = None
    log: Path | None = None

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


@dataclass(frozen=True)
class StopResult:
    stopped: bool
    message: str


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def configured_api_url() -> str | None:
    """The operator's own Prefect API (environment or Prefect profile), which always wins."""
    # Imported here: the CLI imports this module at start-up, and Prefect's two seconds of
    # import belong only to the commands that use it.
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or None


def _local_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prefect_port}/api"


def _state_path(settings: Settings) -> Path:
    return settings.data_root / STATE_FILE


def _prefect_pid_file() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "server.pid"


def _is_our_server(pid: int) -> bool:
    """Whether `pid` is still a `prefect server start` (a pid can be reused after a reboot)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in cmdline and b"server" in cmdline and b"start" in cmdline


def _read_state(settings: Settings) -> dict | None:
    path = _state_path(settings)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _is_our_server(int(state.get("pid", 0))):
        path.unlink(missing_ok=True)  # stale: the server died or the machine restarted
        return None
    return state


def server_status(settings: Settings) -> ServerStatus:
    configured = configured_api_url()
    if configured:
        return ServerStatus(configured, _healthy(configured), "PREFECT_API_URL")
    url = _local_url(settings)
    state = _read_state(settings)
    if state is not None:
        return ServerStatus(url, _healthy(url), "avatarflow", state["pid"], state["started_at"],
                            settings.storage.logs / LOG_FILE)
    return ServerStatus(url, _healthy(url), "other" if _healthy(url) else "none")


def start_server(settings: Settings, timeout_s: float = 180) -> tuple[ServerStatus, bool]:
    """The server avatarflow should use, started in the background if none answers; and
    whether it was started by this call."""
    status = server_status(settings)
    if status.healthy or status.source == "PREFECT_API_URL":
        return status, False
    if status.source == "avatarflow":  # our process is alive but not answering yet: wait for it
        return _wait_healthy(settings, status.pid, timeout_s), False
    logs = settings.storage.logs
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with open(logs / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(settings.prefect_port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # its own process group: `stop` ends all of it
        )
    state = {"pid": process.pid, "port": settings.prefect_port, "started_at": time.time()}
    _state_path(settings).write_text(json.dumps(state))
    try:
        _prefect_pid_file().parent.mkdir(parents=True, exist_ok=True)
        _prefect_pid_file().write_text(str(process.pid))
    except OSError:
        pass  # only a convenience for `prefect server stop`
    return _wait_healthy(settings, process.pid, timeout_s), True


def _wait_healthy(settings: Settings, pid: int | None, timeout_s: float) -> ServerStatus:
    url = _local_url(settings)
    log = settings.storage.logs / LOG_FILE
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if pid is not None and not _is_our_server(pid):
            _state_path(settings).unlink(missing_ok=True)
            raise ConfigurationError(
                f"the Prefect server exited while starting (port {settings.prefect_port} in use? "
                f"set AVATARFLOW_PREFECT_PORT to another); its last lines:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ConfigurationError(f"the Prefect server did not answer within {timeout_s:.0f} s; see {log}")
        time.sleep(0.5)
    return server_status(settings)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _group_alive(pgid: int) -> bool:
    try:
        os.waitpid(pgid, os.WNOHANG)  # reap it if this process started it
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_server(settings: Settings, grace_s: float = 20) -> StopResult:
    """Stop the server avatarflow started (its whole process group); leave any other alone."""
    state = _read_state(settings)
    if state is None:
        status = server_status(settings)
        if status.source == "other":
            return StopResult(False, f"a Prefect server answers at {status.api_url}, but avatarflow did not "
                                     "start it; stop it where it was started")
        return StopResult(False, "no Prefect server started by avatarflow is running")
    pid = int(state["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    forced = _group_alive(pid)
    if forced:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while _group_alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.2)
    _state_path(settings).unlink(missing_ok=True)
    try:
        if _prefect_pid_file().read_text().strip() == str(pid):
            _prefect_pid_file().unlink()
    except OSError:
        pass
    how = "killed after it ignored SIGTERM for {:.0f} s".format(grace_s) if forced else "stopped"
    return StopResult(True, f"Prefect server (pid {pid}, port {state['port']}) {how}")


def ensure_local_server(settings: Settings) -> tuple[str, bool]:
    """The API URL to use (the operator's own, or avatarflow's local server, started if needed),
    and whether this call started the server. Child processes inherit the URL."""
    status, started = start_server(settings)
    os.environ["PREFECT_API_URL"] = status.api_url
    return status.api_url, started


@contextmanager
def using_server(api_url: str) -> Iterator[None]:
    """Point this process's Prefect client at `api_url` (settings are read once, so the
    environment alone is not enough once Prefect has been imported)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield
