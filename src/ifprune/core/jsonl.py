"""Reading JSON-lines files with line numbers, so every malformed-data error can name its line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator


def iter_jsonl(path: str | Path, on_bad: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line. A line that is not a JSON object goes to
    `on_bad(line, why)` (which may count it or raise); without `on_bad` it is an IfpruneError."""
    from .errors import IfpruneError

    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                why = None if isinstance(row, dict) else "not an object"
            except json.JSONDecodeError as e:
                why = f"not valid JSON: {e.msg}"
            if why is None:
                yield n, row
            elif on_bad is not None:
                on_bad(n, why)
            else:
                raise IfpruneError(f"{path}:{n}: malformed JSON line ({why}); fix or remove that line")


def read_json_array(path: str | Path) -> list:
    """A file holding one JSON array (Alpaca-style data sets); errors name the line."""
    from .errors import IfpruneError

    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise IfpruneError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(rows, list):
        raise IfpruneError(f"{path}: expected a JSON array of objects")
    return rows
