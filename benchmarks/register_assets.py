"""Register 10,000 assets through manifest intake on SQLite and on PostgreSQL; print assets/s.

    .venv/bin/python benchmarks/register_assets.py [--assets 10000]

Each row references real portrait and speech files (so file hashing, template rendering and
validation run as in production) with its own prompt, so every row is a new asset. The
PostgreSQL server is a throwaway one started from the Debian binaries.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from db.pgserver import PostgresServer
from db.session import Database
from tasks.intake import read_manifest, submit, validate_rows
from tasks.prompts import TemplateLibrary

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def make_manifest(folder: Path, count: int) -> Path:
    images = sorted((MEDIA / "image").glob("*.jp*g"))[:4]
    audios = sorted((MEDIA / "audio").glob("*.wav"))[:4]
    manifest = folder / "bench.jsonl"
    with open(manifest, "w") as handle:
        for i in range(count):
            row = {"image": str(images[i % len(images)]), "audio": str(audios[i % len(audios)]),
                   "template": "default", "vars": {"subject": f"presenter number {i}"},
                   "priority": i % 5, "tags": ["bench"], "external_id": f"bench-{i}"}
            handle.write(json.dumps(row) + "\n")
    return manifest


def run(label: str, url: str, manifest: Path, count: int) -> None:
    database = Database(url)
    database.migrate()
    started = time.perf_counter()
    rows, _ = read_manifest(manifest)
    specs, problems = validate_rows(rows, base=manifest.parent, roots=[MEDIA], templates=TemplateLibrary(),
                                    default_preset="standard")
    validate_s = time.perf_counter() - started
    assert not problems and len(specs) == count
    started = time.perf_counter()
    result = submit(database, manifest, input_roots=[MEDIA], actor="bench")
    submit_s = time.perf_counter() - started
    assert len(result.created) == count, len(result.created)
    started = time.perf_counter()
    repeat = submit(database, manifest, input_roots=[MEDIA], actor="bench")
    resubmit_s = time.perf_counter() - started
    assert not repeat.created
    print(f"{label:<11} {count} assets: submit {submit_s:6.2f} s = {count / submit_s:5.0f} assets/s "
          f"(of which reading + validation {validate_s:5.2f} s, database {submit_s - validate_s:5.2f} s); "
          f"re-submit, all known: {count / resubmit_s:5.0f} assets/s")
    database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=int, default=10_000)
    args = parser.parse_args()
    if not MEDIA.is_dir():
        sys.exit(f"real media not found at {MEDIA}")
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_manifest(folder, args.assets)
        run("SQLite", f"sqlite:///{folder / 'bench.db'}", manifest, args.assets)
        with PostgresServer() as server:
            run("PostgreSQL", server.create_database("bench"), manifest, args.assets)


if __name__ == "__main__":
    main()
