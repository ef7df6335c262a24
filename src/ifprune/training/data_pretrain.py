"""Stage-1 data: real text packed into documents of K chunks.

Sources: the local pre-training files (../shared/data/pretrain) plus text gathered reproducibly
from this machine: the installed Python standard library's sources and the plain-text files under
/usr/share/doc, read in sorted path order up to a character budget, so the same budget gives the
same corpus on any machine with the same installation.
"""

from __future__ import annotations

import itertools
import sysconfig
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from .data_sft import read_jsonl


def read_pretrain_file(path: Path) -> list[str]:
    """Documents of one file: JSONL (field "text", else "0") or plain text split at blank lines."""
    if not path.is_file():
        raise IfpruneError(f"data file not found: {path} (set IFPRUNE_DATA or data.data_dir to the data folder)")
    if path.suffix == ".jsonl":
        docs = []
        for n, row in enumerate(read_jsonl(path), 1):
            text = row.get("text", row.get("0"))
            if not isinstance(text, str):
                raise IfpruneError(f"{path}:{n}: no text field ('text' or '0')")
            docs.append(text)
        return docs
    text = path.read_text(encoding="utf-8", errors="replace")
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    # merge short blocks (headings, single lines) into documents of a useful length
    docs, cur = [], ""
    for b in blocks:
        cur = f"{cur}\n\n{b}" if cur else b
        if len(cur) > 2000:
            docs.append(cur)
            cur = ""
    if cur:
        docs.append(cur)
    return docs


def local_text_files() -> list[Path]:
    """Python stdlib sources (no tests) and uncompressed Debian docs, alternating, each in sorted order."""
    std = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(std.rglob("*.py"))
             if "test" not in p.relative_to(std).parts[0] and "site-packages" not in p.parts]
    doc = Path("/usr/share/doc")
    docs = [p for p in sorted(doc.rglob("*")) if p.is_file() and not p.is_symlink()
            and p.suffix not in (".gz", ".png", ".jpg", ".svg", ".ico")] if doc.is_dir() else []
    out = []
    for pair in itertools.zip_longest(files, docs):
        out += [p for p in pair if p is not None]
    return out


def gather_local_text(max_chars: int) -> list[str]:
    """Deterministic: files in `local_text_files` order (up to 20k chars each) until the budget."""
    if max_chars <= 0:
        return []
    docs, total = [], 0
    for p in local_text_files():
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) < 200:
            continue
        text = text[:20000]
        docs.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return docs


def pack_documents(tokenizer, docs: list[str], *, num_chunks: int, chunk_tokens: int) -> torch.Tensor:
    """[N, num_chunks * chunk_tokens] token blocks; documents joined by EOS, then cut into blocks."""
    block = num_chunks * chunk_tokens
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for d in docs:
        ids += tokenizer(d, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids.append(eos)
    n = len(ids) // block
    if n == 0:
        raise IfpruneError(f"the pre-training corpus has {len(ids)} tokens, fewer than one block of {block}")
    return torch.tensor(ids[: n * block], dtype=torch.long).view(n, block)


def pretrain_corpus(tokenizer, root: Path, files: list[str], *, local_text_chars: int, num_chunks: int,
                    chunk_tokens: int, val_docs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train blocks, validation blocks): a seeded permutation of all blocks, the first `val_docs` held out."""
    docs = []
    for f in files:
        docs += read_pretrain_file(root / f)
    docs += gather_local_text(local_text_chars)
    blocks = pack_documents(tokenizer, docs, num_chunks=num_chunks, chunk_tokens=chunk_tokens)
    perm = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    blocks = blocks[perm]
    return blocks[val_docs:], blocks[:val_docs]
