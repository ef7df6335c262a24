"""How much memory and disk are free, and a clear error before a step that would not fit in them.

The kernel's out-of-memory killer ends a process without a word, after whatever it had computed is lost, and a
full disk fails a write at its end; a step that can estimate its peak from the model's shape says so first, with
the option that lowers it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import IfpruneError


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def require_memory(need: int, what: str, fix: str, *, margin: float = 0.9) -> None:
    """Raise before `what` if it needs more than `margin` of the free memory; `fix` says what lowers it."""
    free = available_bytes()
    if free is not None and need > margin * free:
        raise IfpruneError(f"{what} needs {need / 1e9:.1f} GB and {free / 1e9:.1f} GB is free: {fix}")


def free_disk_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem that holds `path` (or would: its nearest existing parent); None if unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def require_disk(need: int, path: str | os.PathLike, what: str, fix: str, *, margin: float = 0.95) -> None:
    """Raise before `what` writes about `need` bytes at `path` if its filesystem has less free (nothing written)."""
    free = free_disk_bytes(path)
    if free is not None and need > margin * free:
        raise IfpruneError(f"{what} needs about {need / 1e9:.2f} GB of disk at {path} and {free / 1e9:.2f} GB is free: "
                           f"{fix}")
