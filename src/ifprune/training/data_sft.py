"""Stage-2 data: an SFT mixture from the local data sets, each example tagged with its task family.

Only training splits are read (GSM8K train, the MATH 4500 outside MATH-500, MBPP task_ids
601-974, instruction and code sets); each family's validation slice is held out from those, never
from a test split. Examples are formatted with the chat template; the predictor reads the first
user message (encoded exactly as at inference) and the loss falls on the response tokens only.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from ..core.jsonl import iter_jsonl, read_json_array
from ..eval.families import SFT_TASKS, reserved_prompts
from ..core.prompting import encode_prompt, response_ids

@dataclass
class SFTExample:
    family: str
    prompt: str  # the first user message: what the predictor reads
    response: str


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise IfpruneError(f"data file not found: {path} (set IFPRUNE_DATA or data.data_dir to the data folder)")
    return [row for _, row in iter_jsonl(path)]


def read_json_list(path: Path) -> list[dict]:
    if not path.is_file():
        raise IfpruneError(f"data file not found: {path} (set IFPRUNE_DATA or data.data_dir to the data folder)")
    return read_json_array(path)


def _need(row: dict, keys: tuple[str, ...], path: Path, n: int) -> list[str]:
    out = []
    for k in keys:
        v = row.get(k)
        if not isinstance(v, str):
            raise IfpruneError(f"{path}:{n}: missing text field {k!r} (has {', '.join(sorted(row)) or 'nothing'})")
        out.append(v)
    return out


def _instruction(instr: str, inp: str) -> str:
    return f"{instr}\n\n{inp}" if inp.strip() else instr


def load_family(root: Path, family: str) -> list[SFTExample]:
    """All training examples of one family, in file order."""
    ex: list[SFTExample] = []
    if family == "gsm8k":
        p = root / "gsm8k/train.jsonl"
        for n, r in enumerate(read_jsonl(p), 1):
            q, a = _need(r, ("question", "answer"), p, n)
            ex.append(SFTExample(family, q, a))
    elif family == "math":
        p = root / "math/math_test_minus500.jsonl"
        for n, r in enumerate(read_jsonl(p), 1):
            q, a = _need(r, ("problem", "solution"), p, n)
            ex.append(SFTExample(family, q, a))
    elif family == "mbpp":
        p = root / "mbpp/mbpp.jsonl"
        for n, r in enumerate(read_jsonl(p), 1):
            tid = r.get("task_id")
            if not isinstance(tid, int):
                raise IfpruneError(f"{p}:{n}: missing integer task_id")
            if not 601 <= tid <= 974:  # the standard MBPP train split; 11-510 is test
                continue
            text, code = _need(r, ("text", "code"), p, n)
            tests = "\n".join(r.get("test_list") or [])
            ex.append(SFTExample(family, f"{text}\nYour code should pass these tests:\n{tests}",
                                 code.replace("\r\n", "\n")))
    elif family == "code":
        p = root / "instruct/codealpaca/code_alpaca_2k.json"
        for n, r in enumerate(read_json_list(p), 1):
            i, x, o = _need(r, ("instruction", "input", "output"), p, n)
            ex.append(SFTExample(family, _instruction(i, x), o))
        p = root / "instruct/gpteacher/codegen-instruct.json"
        for n, r in enumerate(read_json_list(p), 1):
            i, x, o = _need(r, ("instruction", "input", "response"), p, n)
            ex.append(SFTExample(family, _instruction(i, x), o))
    elif family == "general":
        p = root / "instruct/alpaca/alpaca_5000.json"
        for n, r in enumerate(read_json_list(p), 1):
            i, x, o = _need(r, ("instruction", "input", "output"), p, n)
            ex.append(SFTExample(family, _instruction(i, x), o))
        for name in ("instruct/self_instruct/user_oriented_instructions.jsonl", "instruct/alpaca/seed_tasks.jsonl"):
            p = root / name
            for n, r in enumerate(read_jsonl(p), 1):
                (i,) = _need(r, ("instruction",), p, n)
                for inst in r.get("instances") or []:
                    if isinstance(inst, dict) and isinstance(inst.get("output"), str):
                        ex.append(SFTExample(family, _instruction(i, inst.get("input") or ""), inst["output"]))
    elif family == "t0":
        d = root / "instruct/self_instruct/t0_train_50k"
        files = sorted(d.glob("*.jsonl")) if d.is_dir() else []
        if not files:
            raise IfpruneError(f"data folder not found or empty: {d}")
        for p in files:
            for n, r in enumerate(read_jsonl(p), 1):
                q, a = _need(r, ("prompt", "completion"), p, n)
                ex.append(SFTExample(family, q.strip(), a.replace("<|endoftext|>", "").strip()))
    else:
        raise IfpruneError(f"unknown task family {family!r}; choose from {', '.join(SFT_TASKS)}")
    return [e for e in ex if e.prompt.strip() and e.response.strip()]


def sft_splits(root: Path, families: list[str], *, max_per_family: int, val_per_family: int,
               seed: int = 0, exclude_eval_prompts: bool = True,
               skip_per_family: int = 0) -> tuple[list[SFTExample], list[SFTExample]]:
    """(train, validation): per family a seeded shuffle, the first `val_per_family` held out. Prompts
    of `ifprune eval nll`'s validation mix are also kept out of train (after the split, so the
    validation slices do not depend on it), so that suite stays unseen by trained predictors.
    Each family's training examples are a prefix of one fixed order, so `skip_per_family=K` leaves
    out exactly the examples a run with `max_per_family=K` could have read."""
    train, val = [], []
    reserved = reserved_prompts(root) if exclude_eval_prompts else set()
    for fam in families:
        ex = load_family(root, fam)
        random.Random(f"{seed}:{fam}").shuffle(ex)
        val += ex[:val_per_family]
        train += [e for e in ex[val_per_family:] if e.prompt not in reserved][skip_per_family:skip_per_family + max_per_family]
    random.Random(seed).shuffle(train)
    return train, val


@dataclass
class TokenizedSFT:
    family: str
    prompt: str
    input_ids: torch.Tensor  # [T] prompt + response
    labels: torch.Tensor  # [T], -100 on the prompt


def tokenize_sft(tokenizer, ex: SFTExample, *, max_seq_len: int, max_prompt_tokens: int) -> TokenizedSFT:
    """Chat-formatted ids; the prompt part is encoded exactly as generation encodes it."""
    p_ids = encode_prompt(tokenizer, ex.prompt)[0][-max_prompt_tokens:]
    r_ids = response_ids(tokenizer, ex.prompt, ex.response)
    r_ids = r_ids[: max(1, max_seq_len - len(p_ids))]
    ids = torch.cat([p_ids, r_ids])
    labels = torch.cat([torch.full_like(p_ids, -100), r_ids])
    return TokenizedSFT(ex.family, ex.prompt, ids, labels)


def write_validation(out: Path, root: Path, families: list[str], *, val_per_family: int, seed: int = 0,
                     first: int = 0) -> int:
    """The held-out validation slices as JSONL rows {"prompt", "response", "family"} for `ifprune eval
    nll --data` / `eval compare --data`: the examples a trained artifact never saw. `first`: leave out
    each family's first N of them (a second slice that earlier comparisons did not read)."""
    from ..core.paths import write_text

    if not 0 <= first < val_per_family:
        raise IfpruneError(f"--first must be in [0, --val-per-family), got {first} with {val_per_family}")
    _, val = sft_splits(root, families, max_per_family=1, val_per_family=val_per_family, seed=seed,
                        exclude_eval_prompts=False)
    rows, seen = [], {}
    for i, e in enumerate(val):  # ids keep their place in the whole slice, so two slices never share one
        seen[e.family] = seen.get(e.family, 0) + 1
        if seen[e.family] > first:
            rows.append(json.dumps({"id": f"{e.family}-{i}", "prompt": e.prompt, "response": e.response,
                                    "family": e.family}) + "\n")
    write_text(out, "".join(rows))
    return len(rows)


def write_unread(out: Path, root: Path, families: list[str], *, after: int, per_family: int, val_per_family: int,
                 seed: int = 0) -> int:
    """Training examples at positions `after`..`after + per_family` of each family's fixed order, as
    `write_validation` writes them: held out from every run whose data ends before `after` (a run reads
    a prefix, see `sft_splits`), for checks that want more examples than the validation slices hold."""
    from ..core.paths import write_text

    if after < 0 or per_family < 1:
        raise IfpruneError(f"--unread-after must be >= 0 and --per-family >= 1, got {after} and {per_family}")
    rows = []
    for fam in families:
        train, _ = sft_splits(root, [fam], max_per_family=per_family, val_per_family=val_per_family, seed=seed,
                              skip_per_family=after)
        if not train:
            raise IfpruneError(f"family {fam} has no training examples after position {after}")
        rows += [json.dumps({"id": f"{fam}-unread-{after}-{i}", "prompt": e.prompt, "response": e.response,
                             "family": fam}) + "\n" for i, e in enumerate(train)]
    write_text(out, "".join(rows))
    return len(rows)


def main(argv=None) -> int:
    import argparse

    from .config import DataConfig

    d = DataConfig()
    p = argparse.ArgumentParser(description="Write the SFT validation slices (held out from training) as JSONL.")
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", default=None, help="data folder (default: $IFPRUNE_DATA or ../shared/data)")
    p.add_argument("--families", default=",".join(d.families))
    p.add_argument("--val-per-family", type=int, default=d.val_per_family)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first", type=int, default=0, help="leave out each family's first N validation examples")
    p.add_argument("--unread-after", type=int, default=None, metavar="K",
                   help="instead of the validation slices: training examples from position K of each family on "
                        "(unread by runs with skip_per_family + max_per_family <= K), --per-family of them")
    p.add_argument("--per-family", type=int, default=50, help="with --unread-after: examples per family")
    a = p.parse_args(argv)
    root = Path(a.data_dir) if a.data_dir else d.root()
    if a.unread_after is not None:
        n = write_unread(Path(a.out), root, a.families.split(","), after=a.unread_after, per_family=a.per_family,
                         val_per_family=a.val_per_family, seed=a.seed)
        print(f"wrote {n} unread training examples (from position {a.unread_after} per family) to {a.out}")
        return 0
    n = write_validation(Path(a.out), root, a.families.split(","), val_per_family=a.val_per_family, seed=a.seed,
                         first=a.first)
    print(f"wrote {n} validation examples to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
