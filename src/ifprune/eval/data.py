"""Finding and reading the local benchmark files (../shared/data), with clear errors and a
skip-or-fail policy for malformed rows."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..core.errors import IfpruneError
from ..core.jsonl import iter_jsonl, read_json_array

log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    """`$IFPRUNE_DATA`, else the first `shared/data` found next to the repo or the working directory."""
    if env := os.environ.get("IFPRUNE_DATA"):
        return Path(env)
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *Path.cwd().parents, *here.parents]:
        cand = base / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data"


def data_file(data_dir: str | Path | None, rel: str) -> Path:
    """`rel` inside the data directory; a missing file names the path and where the data comes from."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = root / rel
    if not path.exists():
        raise IfpruneError(
            f"data file not found: {path} (the benchmark copies live in ../shared/data; "
            "give --data-dir DIR or set IFPRUNE_DATA)"
        )
    return path


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Example:
    """One benchmark item: a stable id (for the resume cache) and the suite's fields."""

    id: str
    data: dict[str, Any]


@dataclass
class LoadReport:
    """How many rows were read and how many were skipped as malformed (with the first few line numbers)."""

    path: str
    read: int = 0
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)


def read_rows(path: Path, check: Callable[[Any], str | None], *, strict: bool, report: LoadReport) -> Iterable[tuple[int, dict]]:
    """JSON lines (or one JSON array) -> (line number, row) for rows that `check` accepts.

    `check(row)` returns None for a good row or a reason. Malformed rows fail with their line number
    under `strict`, else they are skipped and counted in `report`.
    """

    def bad(n: int, why: str):
        if strict:
            raise IfpruneError(f"{path}:{n}: malformed row ({why}); fix the file or drop --strict to skip such rows")
        report.skipped += 1
        if len(report.skipped_lines) < 10:
            report.skipped_lines.append(n)

    if path.suffix == ".json":
        for n, row in enumerate(read_json_array(path), 1):
            why = "not an object" if not isinstance(row, dict) else check(row)
            if why:
                bad(n, why)
                continue
            report.read += 1
            yield n, row
        return
    for n, row in iter_jsonl(path, on_bad=bad):
        why = check(row)
        if why:
            bad(n, why)
            continue
        report.read += 1
        yield n, row


def need(*keys: str, types: tuple = (str,)) -> Callable[[dict], str | None]:
    """A row check: every key present and of one of `types`."""

    def check(row: dict) -> str | None:
        for k in keys:
            if k not in row:
                return f"missing field {k!r}"
            if not isinstance(row[k], types):
                return f"field {k!r} is {type(row[k]).__name__}, expected {'/'.join(t.__name__ for t in types)}"
        return None

    return check


def read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[1:] if rows and rows[0] and rows[0][0] == "question" else rows


def finish_report(report: LoadReport) -> None:
    if report.skipped:
        log.warning("%s: skipped %d malformed rows (lines %s%s); use --strict to fail instead", report.path,
                    report.skipped, ", ".join(map(str, report.skipped_lines)), ", ..." if report.skipped > 10 else "")
