"""One racing worker for the concurrent-claim test: claims assets until none are left.

Run as a separate process: python claim_worker.py DB_URL WORKER_NAME GO_FILE OUT_FILE
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from db.lifecycle import claim_next, transition
from db.session import Database


def main(url: str, worker: str, go_file: Path, out_file: Path) -> None:
    database = Database(url)
    with database.engine.connect():
        pass  # connect before the start line so every worker starts racing at once
    while not go_file.exists():
        time.sleep(0.01)
    claimed: list[int] = []
    while True:
        with database.session() as session:
            asset = claim_next(session, worker, ["submitted"], lease_seconds=600)
            if asset is None:
                break
            transition(session, asset, "preprocessed", actor=worker, claimed_by=worker)
            claimed.append(asset.id)
    database.dispose()
    out_file.write_text(json.dumps(claimed))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
