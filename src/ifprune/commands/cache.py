"""`ifprune cache list|clear`: what ifprune keeps on disk (dequantised models, compensation statistics, eval
caches), how large it is, and a way to remove it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("cache", help="show or clear what ifprune keeps in its cache folder",
                       description="Everything ifprune writes outside your --out paths lives in one folder "
                                   "($IFPRUNE_CACHE, else $XDG_CACHE_HOME/ifprune, else ~/.cache/ifprune).")
    p.add_argument("action", choices=("list", "clear"), help="list: each entry and its size; clear: remove entries")
    p.add_argument("--kind", default=None, help="only this kind of entry (a folder of the cache: gguf, moments, eval, ...)")
    p.add_argument("--yes", action="store_true", help="with clear: remove without asking (else only list what would go)")
    p.set_defaults(func=run)


def size_of(path: Path) -> int:
    """Bytes under `path`; links are counted as links, never followed."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(q.lstat().st_size for q in path.rglob("*") if q.is_symlink() or q.is_file())


def entries(root: Path, kind: str | None) -> list[tuple[str, Path, int]]:
    from ..core.errors import IfpruneError

    if not root.is_dir():
        return []
    kinds = sorted(q for q in root.iterdir() if q.is_dir() and not q.is_symlink())
    if kind is not None:
        if not (root / kind).is_dir():
            raise IfpruneError(f"no cache kind {kind!r} in {root}; there are: "
                               f"{', '.join(q.name for q in kinds) or 'none'}")
        kinds = [root / kind]
    return [(k.name, e, size_of(e)) for k in kinds for e in sorted(k.iterdir())]


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def run(args) -> int:
    from ..core.paths import cache_dir

    root = cache_dir()
    found = entries(root, args.kind)
    total = sum(s for *_, s in found)
    for kind, path, size in found:
        print(f"{human(size):>9}  {kind}/{path.name}")
    print(f"{human(total):>9}  in {len(found)} entries under {root}")
    if args.action == "clear":
        if not args.yes:
            print("nothing removed: add --yes to remove the entries listed", file=sys.stderr)
            return 1 if found else 0
        for _, path, _ in found:
            if path.is_symlink() or path.is_file():
                path.unlink()
            else:
                shutil.rmtree(path)
        print(f"removed {len(found)} entries ({human(total)})")
    return 0
