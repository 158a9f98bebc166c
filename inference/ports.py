"""Master ports for torchrun: each concurrent job (or warm worker) on a host gets its own."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import IO, Self

from inference.liveavatar_config import LiveAvatarConfig


class PortLease:
    """A master port held for one job (or one warm worker); released on `release()` or exit."""

    def __init__(self, port: int, lock_file: IO[bytes]) -> None:
        self.port = port
        self._lock_file: IO[bytes] | None = lock_file

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class PortAllocator:
    """Hands out master ports from a range; two holders, in any process of this host, never share one.

    A port is held through an exclusive flock on a file per port (the kernel drops it when the
    holder dies), and it is only handed out when nothing is listening on it.
    """

    _next_offset = os.getpid() % 97  # spread processes over the range; rotate within one

    def __init__(self, first: int, last: int, lock_dir: Path | None = None) -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"bad master port range {first}-{last}")
        self.first, self.last = first, last
        self.lock_dir = lock_dir or Path(tempfile.gettempdir()) / "avatarflow-ports"
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: LiveAvatarConfig) -> PortAllocator:
        return cls(*config.master_port_range, lock_dir=config.port_lock_dir)

    def acquire(self) -> PortLease:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        count = self.last - self.first + 1
        with self._lock:
            start = PortAllocator._next_offset
            for i in range(count):
                port = self.first + (start + i) % count
                lease = self._try(port)
                if lease is not None:
                    # Next time start after this port: a just-released port may linger in TIME_WAIT.
                    PortAllocator._next_offset = (start + i + 1) % count
                    return lease
        raise RuntimeError(f"no free master port in {self.first}-{self.last}")

    def _try(self, port: int) -> PortLease | None:
        handle = open(self.lock_dir / f"{port}.lock", "a+b")  # noqa: SIM115 - held by the lease
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        if not port_is_free(port):
            handle.close()
            return None
        return PortLease(port, handle)


def port_is_free(port: int) -> bool:
    """True when a TCP socket can bind the port on all interfaces (torchrun's store will)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True
