"""How much memory is free, and a clear error before a step that would not fit in it.

The kernel's out-of-memory killer ends a process without a word, after whatever it had computed is lost;
a step that can estimate its peak from the model's shape says so first, with the option that lowers it.
"""

from __future__ import annotations

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
