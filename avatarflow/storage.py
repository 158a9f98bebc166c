"""Where files live under the data root, and how they are written so a crash never leaves half a file."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, max_length: int = 80) -> str:
    """A file-name component with only [A-Za-z0-9._-].

    Live Avatar reads a `+` in the audio path as "several speakers", so derived files must never
    carry one; spaces and shell metacharacters are dropped for the same kind of reason.
    """
    cleaned = _UNSAFE.sub("_", name).strip("._") or "file"
    return cleaned[:max_length]


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is fsynced and renamed into place.

    A reader never sees a partial file: either the old file (or none) or the complete new one.
    The temporary name keeps the final suffix so tools that sniff extensions (ffmpeg) still work.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the permissions a normal write would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Storage:
    """The layout of the data root."""

    root: Path

    @property
    def assets(self) -> Path:
        return self.root / "assets"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def deliveries(self) -> Path:
        return self.root / "deliveries"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def cache(self) -> Path:
        """Content-addressed stage outputs, shared by every asset with the same inputs."""
        return self.root / "cache"

    def asset_dir(self, asset_key: str) -> Path:
        """Per-asset folder, fanned out by the key's first two characters."""
        return self.assets / asset_key[:2] / asset_key

    def ensure(self) -> None:
        for folder in (self.root, self.assets, self.inbox, self.deliveries, self.reports, self.logs, self.cache):
            folder.mkdir(parents=True, exist_ok=True)


def sweep_partials(root: Path, older_than_s: float) -> list[Path]:
    """Remove half-written files (`.*.partial*`, see `atomic_path` and the engines) under `root`
    that nothing has touched for `older_than_s`: what a SIGKILL or a power cut left behind. A file
    being written now is younger than that, so it is left alone."""
    removed: list[Path] = []
    cutoff = time.time() - older_than_s
    for folder, _, names in os.walk(root):
        for name in names:
            if not (name.startswith(".") and ".partial" in name):
                continue
            path = Path(folder) / name
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue  # its writer finished (renamed it) or another sweep got there first
    return removed
