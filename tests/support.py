"""Helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

PROMPT = "A man in a dark suit is speaking calmly to the camera in an office."


def add_assets(session, count: int, *, batch_name: str = "batch", priority: int = 0) -> list[int]:
    """Insert `count` submitted assets with made-up inputs; return their ids."""
    import hashlib

    from sqlalchemy import select

    from db.models import Asset, Batch, Event

    batch = session.scalar(select(Batch).where(Batch.name == batch_name))
    if batch is None:
        batch = Batch(name=batch_name, created_by="test")
        session.add(batch)
        session.flush()
    assets = []
    for i in range(count):
        key = hashlib.sha256(f"{batch_name}-{i}-{priority}".encode()).hexdigest()
        asset = Asset(key=key, batch=batch, image_path=f"/in/{i}.jpg", image_sha256="0" * 64,
                      audio_path=f"/in/{i}.wav", audio_sha256="1" * 64, prompt="A person talks.",
                      preset="standard", priority=priority)
        session.add(asset)
        session.add(Event(asset=asset, actor="test", from_state=None, to_state="submitted"))
        assets.append(asset)
    session.flush()
    return [a.id for a in assets]


def write_manifest(folder: Path, rows: list[dict], fmt: str) -> Path:
    if fmt == "csv":
        path = folder / "batch.csv"
        fields = sorted({k for r in rows for k in r})
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    elif fmt == "jsonl":
        path = folder / "batch.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path = folder / "batch.yaml"
        path.write_text(yaml.safe_dump({"assets": rows}))
    return path
