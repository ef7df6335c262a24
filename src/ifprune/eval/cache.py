"""Per-example results as JSON lines, one file per (suite, configuration) hash, so an interrupted
run resumes where it stopped. A line is appended and flushed as soon as its example is done; a torn
last line (a kill mid-write) is ignored on reading."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultCache:
    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.rows: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # torn last line of an interrupted run
                    if isinstance(row, dict) and "id" in row:
                        self.rows[str(row["id"])] = row

    def get(self, example_id: str) -> dict | None:
        return self.rows.get(example_id)

    def put(self, row: dict) -> None:
        self.rows[str(row["id"])] = row
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
