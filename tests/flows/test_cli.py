"""The `avatarflow` console script, run as operators run it: init, submit, status, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import write_manifest

AVATARFLOW = Path(sys.executable).with_name("avatarflow")


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AVATARFLOW), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def cli_env(db_url, tmp_path, mixed, media):
    folder, _, _, roots = mixed
    env = dict(os.environ, AVATARFLOW_DATA_ROOT=str(tmp_path / "var"), AVATARFLOW_DATABASE_URL=db_url,
               AVATARFLOW_INPUT_ROOTS="[" + ",".join(f'"{r}"' for r in roots) + "]", COLUMNS="200")
    return env


# Each format once, the backends between them (the parsing does not depend on the backend).
@pytest.mark.parametrize(("db_url", "fmt"), [("sqlite", "csv"), pytest.param("postgres", "jsonl", marks=pytest.mark.postgres),
                                             ("sqlite", "yaml")], indirect=["db_url"])
def test_init_submit_status_on_a_twenty_row_manifest(cli_env, mixed, tmp_path, fmt):
    folder, rows, expected, _ = mixed
    manifest = write_manifest(folder, rows, fmt)
    done = run(["init"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "migrated now" in done.stdout

    done = run(["submit", str(manifest)], cli_env, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # some rows were rejected
    assert "14 row(s) rejected" in done.stdout
    assert "6 new asset(s) registered" in done.stdout
    reported = {line.split("│")[1].strip(): line.split("│")[3].strip()
                for line in done.stdout.splitlines()
                if line.startswith("│ ") and line.split("│")[1].strip().isdigit()}
    assert {int(r): f for r, f in reported.items()} == {row: field for row, (field, _) in expected.items()}

    done = run(["submit", str(manifest)], cli_env, tmp_path)
    assert "0 new asset(s) registered, 6 already registered" in done.stdout

    done = run(["status"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    submitted = next(line for line in done.stdout.splitlines() if line.startswith("│ submitted "))
    assert submitted.split("│")[2].strip() == "6"

    done = run(["status", "r1"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "facerec_obama.jpg" in done.stdout and "submitted in batch manifest-batch (row 1)" in done.stdout


def test_errors_are_one_readable_line_and_debug_shows_the_traceback(cli_env, tmp_path):
    done = run(["status", "no-such-asset"], cli_env, tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no asset with id, key or external id 'no-such-asset'"
    assert "Traceback" not in done.stderr

    done = run(["submit", str(tmp_path / "missing.csv")], cli_env, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "does not exist" in done.stderr

    done = run(["--debug", "status", "no-such-asset"], cli_env, tmp_path)
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_prompts_render_previews_a_template(cli_env, tmp_path):
    done = run(["prompts", "render", "presenter", "--var", "topic=our new app"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "A friendly presenter is explaining our new app" in done.stdout
    done = run(["prompts", "render", "presenter"], cli_env, tmp_path)
    assert done.returncode == 2 and "needs a value for topic" in done.stderr
