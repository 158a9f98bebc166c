"""Commands in hints written so that they run as printed, wherever the operator's shell is."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# scripts/demo.sh changes into the repository; it passes the folder the operator ran it from.
CALLER_CWD = "AVATARFLOW_CALLER_CWD"


def _spelled(program: Path) -> str:
    """`name` when the shell's PATH finds this very program, else its path from the caller's folder."""
    found = shutil.which(program.name)
    if found and Path(found).resolve() == program.resolve():
        return program.name
    cwd = Path(os.environ.get(CALLER_CWD) or os.getcwd()).resolve()
    path = program.absolute()
    if cwd == Path(cwd.anchor) or not path.is_relative_to(cwd):
        return str(path)
    relative = os.path.relpath(path, cwd)
    return relative if "/" in relative else f"./{relative}"  # a bare name would be looked up on PATH


def _bin_dir() -> Path:
    # The console scripts sit beside the interpreter that runs avatarflow (the venv's bin/).
    return Path(sys.executable).parent


def avatarflow_cmd(args: str = "") -> str:
    """`avatarflow ARGS` as the operator can paste it (e.g. `.venv/bin/avatarflow status`)."""
    text = _spelled(_bin_dir() / "avatarflow")
    return f"{text} {args}".strip()


def prefect_cmd(args: str = "") -> str:
    text = _spelled(_bin_dir() / "prefect")
    return f"{text} {args}".strip()


def pasteable(message: str) -> str:
    """`message` with every `avatarflow …` it names spelled as `avatarflow_cmd` spells it."""
    return message.replace("`avatarflow ", f"`{avatarflow_cmd()} ")
