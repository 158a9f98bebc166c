"""The engine this deployment is configured for, one per gang per process (kept warm)."""

from __future__ import annotations

import threading

from avatarflow.errors import ConfigurationError
from avatarflow.settings import Settings
from inference.engine import Engine, GpuGang

_engines: dict[tuple[str, str], Engine] = {}
_lock = threading.Lock()


def build_engine(settings: Settings) -> Engine:
    if settings.engine == "cpu":
        from inference.cpu_engine import MouthWarpCpuEngine

        return MouthWarpCpuEngine(timeout_s=settings.cpu_engine_timeout_s)
    if settings.engine in ("liveavatar", "liveavatar-warm"):
        from inference.liveavatar import LiveAvatarEngine
        from inference.liveavatar_config import config_from_settings

        config = config_from_settings(settings)
        if settings.engine == "liveavatar":
            return LiveAvatarEngine(config)
        from inference.warm_client import WarmWorkerEngine

        return WarmWorkerEngine(config)
    if settings.engine == "instant":
        from inference.instant import InstantEngine

        return InstantEngine(cache_dir=settings.storage.cache / "instant")
    raise ConfigurationError(
        f"unknown engine {settings.engine!r}: set AVATARFLOW_ENGINE to cpu, liveavatar, liveavatar-warm "
        "(or instant, for benchmarks)")


def engine_for(settings: Settings, gang: GpuGang) -> Engine:
    """The process's engine for `gang`; a warm worker stays loaded across videos."""
    key = (settings.engine, gang.name)
    with _lock:
        if key not in _engines:
            _engines[key] = build_engine(settings)
        return _engines[key]


def close_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.close()
        _engines.clear()
