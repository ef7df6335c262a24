"""Where ifprune keeps things, and how it writes them without ever leaving half a file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def cache_dir() -> Path:
    """`$IFPRUNE_CACHE`, else `$XDG_CACHE_HOME/ifprune`, else `~/.cache/ifprune`."""
    if env := os.environ.get("IFPRUNE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ifprune"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it over `path` only if the block succeeds.

    Works for files and directories alike, so a crash never leaves a partial result in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (checksums of caches and artifacts)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_report(res: dict, out_dir: str | os.PathLike, stem: str, render, command: str | None = None) -> tuple[Path, Path]:
    """`<stem>.json` (raw result, with the command that made it) and `<stem>.md` (`render(res, command)`)."""
    out_dir = Path(out_dir)
    if command:
        res = dict(res, command=command)
    write_json(out_dir / f"{stem}.json", res)
    write_text(out_dir / f"{stem}.md", render(res, command))
    return out_dir / f"{stem}.json", out_dir / f"{stem}.md"


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
