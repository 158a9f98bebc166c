"""`avatarflow --help` as an operator reads it, and the local server commands without a server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.unit


def test_help_lists_commands_in_the_order_an_operator_meets_them_without_bool_labels():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    names = [line.split()[1] for line in result.output.splitlines()
             if line.startswith("│ ") and len(line.split()) > 2 and not line.split()[1].startswith("-")]
    assert names[:4] == ["init", "demo", "submit", "run"], names
    assert "server" in names
    run_help = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "120"}).output
    assert "<bool>" not in result.output + run_help
    assert "--no-deliver" in run_help and "<path>" in run_help  # value types still shown


def test_server_stop_and_status_without_a_server(tmp_path, monkeypatch):
    from avatarflow.settings import get_settings

    monkeypatch.setenv("AVATARFLOW_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("AVATARFLOW_PREFECT_PORT", "1")  # nothing listens on port 1
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    get_settings.cache_clear()
    # A state file left by a server that died (pid 1 is init, not a Prefect server).
    (tmp_path / "prefect-server.json").write_text(json.dumps({"pid": 1, "port": 1, "started_at": 0}))
    try:
        stop = CliRunner().invoke(app, ["server", "stop"])
        assert stop.exit_code == 0 and "no Prefect server started by avatarflow is running" in stop.output
        assert not (tmp_path / "prefect-server.json").exists()  # the stale file was cleared
        status = CliRunner().invoke(app, ["server", "status"])
        assert status.exit_code == 1
        assert "no Prefect server running" in status.output and "server start" in status.output
    finally:
        get_settings.cache_clear()
