"""The nightly `inbox` flow: run a batch for every manifest dropped into the inbox folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from avatarflow.settings import get_settings
from flows.batch import batch_flow

MANIFEST_SUFFIXES = {".csv", ".jsonl", ".ndjson", ".yaml", ".yml"}


def dropped_manifests(inbox: Path) -> list[Path]:
    """Manifest files (and folders of inputs) in the inbox, oldest first; `processed/` is skipped."""
    if not inbox.is_dir():
        return []
    found = [p for p in inbox.iterdir() if not p.name.startswith(".") and p.name != "processed"
             and (p.suffix.lower() in MANIFEST_SUFFIXES or p.is_dir())]
    return sorted(found, key=lambda p: p.stat().st_mtime)


@flow(name="inbox")
def inbox_flow() -> list[dict[str, Any]]:
    """Submit and run each dropped manifest as a batch; move it to inbox/processed afterwards."""
    logger = get_run_logger()
    inbox = get_settings().storage.inbox
    results = []
    for manifest in dropped_manifests(inbox):
        logger.info("running batch for %s", manifest.name)
        results.append(batch_flow(manifest=str(manifest)))
        processed = inbox / "processed"
        processed.mkdir(exist_ok=True)
        # Moved only after the batch ran: a crash leaves it in the inbox and the next run resumes it.
        shutil.move(str(manifest), processed / manifest.name)
    return results
