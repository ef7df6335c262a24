"""Where ifprune keeps things, and how it writes them without ever leaving half a file."""

from __future__ import annotations

import contextlib
import glob
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


_TMP_TAG = ".ifprune-tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(path: Path) -> None:
    """Remove temporary siblings that a killed writer (kill -9, power loss) left behind: only ours
    (the tag and a PID in the name), and only when that PID is gone; each removal is logged."""
    import logging

    prefix = f".{path.name}{_TMP_TAG}"
    for q in path.parent.glob(f"{glob.escape(prefix)}*"):
        try:
            pid = int(q.name[len(prefix):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            logging.getLogger("ifprune").warning("removing %s, left by an interrupted write of %s (process %d)",
                                                 q, path, pid)
            if q.is_dir():
                shutil.rmtree(q, ignore_errors=True)
            else:
                q.unlink(missing_ok=True)


def _readable(target: Path) -> None:
    """Give what was written the permissions of any file the user creates (umask), not a temp file's
    0600/0700: an exported checkpoint must be readable like any other."""
    mask = os.umask(0)
    os.umask(mask)
    items = [target, *target.rglob("*")] if target.is_dir() else [target]
    for q in items:
        if not q.is_symlink():
            os.chmod(q, (0o777 if q.is_dir() else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it over `path` only if the block succeeds.

    Works for files and directories alike, so a crash never leaves a partial result in place; what a
    killed writer left is cleaned up by the next write of the same path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{_TMP_TAG}{os.getpid()}-", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if target.exists():
            _readable(target)
        if path.is_symlink():  # never write through a link: the link itself is replaced
            path.unlink()
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-old")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def drop_link(path: Path, what: str) -> bool:
    """Remove a symlink standing where a cache entry belongs (a cache is read only from what ifprune wrote, never
    followed elsewhere); True when one was removed, with a warning naming it."""
    if not path.is_symlink():
        return False
    import logging

    logging.getLogger("ifprune").warning("%s %s is a symbolic link, not an entry ifprune wrote: removing the link "
                                         "(its target is left alone) and rebuilding", what, path)
    path.unlink()
    return True


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
