"""GPU gangs of this host and the Prefect global concurrency slot each one holds while it generates.

A slot is a count, not a device: binding GPUs is done by `CUDA_VISIBLE_DEVICES` in the engine's
environment; the strict limit makes sure two jobs never use one gang, across processes and hosts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from avatarflow.settings import Settings
from inference.engine import GpuGang
from inference.gpus import parse_gangs

CPU_GANG = GpuGang(name="cpu", devices=())


def configured_gangs(settings: Settings) -> list[GpuGang]:
    """`AVATARFLOW_GANGS`: "cpu" for the CPU engine, or GPU gangs such as "0;1-5"."""
    if settings.gangs.strip().lower() == "cpu":
        return [CPU_GANG]
    return parse_gangs(settings.gangs)


def gang_by_name(settings: Settings, name: str) -> GpuGang:
    for gang in configured_gangs(settings):
        if gang.name == name:
            return gang
    raise KeyError(f"no gang {name!r} in AVATARFLOW_GANGS={settings.gangs!r}")


def limit_name(gang: GpuGang) -> str:
    return f"avatarflow-gang-{gang.host}-{gang.name}"


def ensure_gang_limits(gangs: Sequence[GpuGang]) -> None:
    """Create each gang's global concurrency limit (one slot) if the server lacks it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for gang in gangs:
            try:
                client.read_global_concurrency_limit_by_name(limit_name(gang))
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit_name(gang), limit=1))


@contextmanager
def gang_slot(gang: GpuGang, *, lease_seconds: float = 60) -> Iterator[None]:
    """Hold the gang's slot; strict, so a missing limit is an error rather than no limit at all."""
    from prefect.concurrency.sync import concurrency

    # The lease is renewed while held and lapses when a killed worker stops renewing it, so a
    # crashed run does not keep the gang busy for ever.
    with concurrency(limit_name(gang), occupy=1, strict=True, lease_duration=lease_seconds):
        yield
