"""GPU gangs of this host and the Prefect global concurrency slot each one holds while it generates.

A slot is a count, not a device: binding GPUs is done by `CUDA_VISIBLE_DEVICES` in the engine's
environment; the strict limit makes sure two jobs never use one gang, across processes and hosts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from avatarflow.errors import ConfigurationError
from avatarflow.settings import Settings
from inference.engine import GpuGang
from inference.gpus import parse_gangs

CPU_GANG = GpuGang(name="cpu", devices=())


def configured_gangs(settings: Settings) -> list[GpuGang]:
    """`AVATARFLOW_GANGS`: "cpu" for the CPU engine, or GPU gangs such as "0;1-5"."""
    # The host is part of a gang's identity: two hosts with the same layout must not share a slot.
    if settings.gangs.strip().lower() == "cpu":
        return [replace(CPU_GANG, host=settings.gang_host)]
    return [replace(g, host=settings.gang_host) for g in parse_gangs(settings.gangs)]


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


class GangBusy(RuntimeError):
    """The gang's slot did not come free within the wait allowed."""


@contextmanager
def gang_slot(gang: GpuGang, *, lease_seconds: float = 60, wait_seconds: float | None = None,
              poll_seconds: float = 5.0) -> Iterator[None]:
    """Hold the gang's one slot of its global concurrency limit for the block.

    Strict: a missing limit is an error, never "no limit". The slot is held under a lease that a
    background thread renews; if this process dies, renewals stop and the server's repossessor
    frees the slot when the lease lapses. This talks to Prefect's lease API directly rather than
    through `prefect.concurrency.sync.concurrency`, whose client-side acquisition service was seen
    here to lose a waiting request after a holder was killed, leaving the waiter blocked for ever.
    """
    import contextvars
    import threading
    import time

    import httpx
    from prefect.client.orchestration import get_client

    name = limit_name(gang)
    deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
    server_errors = 0
    with get_client(sync_client=True) as client:
        while True:
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=lease_seconds)
                break
            except (httpx.HTTPStatusError, httpx.TransportError) as exc:
                status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
                if status != 423:
                    # A busy Prefect server answers 503 now and then: wait and ask again, a while.
                    server_errors += 1
                    if (status is not None and status < 500) or server_errors > 12:
                        raise
                    time.sleep(min(2.0 * server_errors, 15.0))
                    continue
                retry_after = float(exc.response.headers.get("Retry-After", poll_seconds))
                if deadline is not None and time.monotonic() + min(retry_after, poll_seconds) > deadline:
                    raise GangBusy(f"gang {gang.name} stayed busy for {wait_seconds:.0f} s") from exc
                time.sleep(min(retry_after, poll_seconds))
        granted = response.json()
        if not granted.get("limits"):
            raise ConfigurationError(f"the concurrency limit {name!r} does not exist; the batch flow creates it")
        lease_id = granted["lease_id"]
        stop = threading.Event()

        def renew() -> None:
            with get_client(sync_client=True) as renewer:
                while not stop.wait(lease_seconds / 3):
                    try:
                        renewer.renew_concurrency_lease(lease_id=lease_id, lease_duration=lease_seconds)
                    except Exception:  # noqa: BLE001 - a missed renewal is retried next tick
                        continue

        # A copy of this context, so the renewals reach the same Prefect server as the grant
        # (a bare thread would see the default settings and talk to some other server).
        renewing = threading.Thread(target=contextvars.copy_context().run, args=(renew,),
                                    name=f"lease-{gang.name}", daemon=True)
        renewing.start()
        try:
            yield
        finally:
            stop.set()
            renewing.join(timeout=10)
            client.release_concurrency_slots_with_lease(lease_id=lease_id)
