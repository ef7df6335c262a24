"""Teacher data: the dense model's own answers to the training prompts, generated once and kept.

What a pruned model should reproduce is the model it came from, not the SFT mix's reference answers
(which fine-tuning alone already drifts towards). This writes the dense model's answers (greedy, and
sampled when asked) to the prompts of the training splits `sft_splits` reads, in llama.cpp (the fastest
dense decode here: runtime.llamacpp), with the provenance a later reader checks: the weights' fingerprint,
the tokenizer, the sampling and the prompt source. Validation slices, the eval suites' reserved prompts
and the held-out fidelity prompts (positions at and after `--before` of each family's order) are never read.

The output folder holds `header.json` and `answers.jsonl` (one row per answer, appended and flushed as it
is made). A rerun with the same header resumes after the last complete row; a different header is refused,
naming both; a line cut by a kill is dropped, never half-trusted.

    python -m ifprune.training.teacher --out runs/teacher --per-family 600 --threads 1

The same tool makes the fidelity set, the yardstick a pruned model is chosen by: the dense model's greedy answers
to the validation slices' prompts (`--split validation`: held out from every training run, one folder per
family's first `--val-per-family` prompts), written as prompt/response JSONL for `ifprune eval nll --data`
(`--write-eval FILE`). Such a folder is refused as training data.

    python -m ifprune.training.teacher --split validation --out runs/fidelity --write-eval fidelity.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from ..core.jsonl import iter_jsonl
from ..core.paths import file_sha256, write_json
from ..eval.families import SFT_TASKS

FORMAT = "ifprune-teacher/1"


@dataclass(frozen=True)
class TeacherConfig:
    families: tuple[str, ...] = tuple(SFT_TASKS)
    per_family: int = 600  # prompts per family, from the start of each family's training order
    before: int = 4000  # held out: never read a family's prompts at or after this position (the fidelity set's)
    seed: int = 0  # the split's shuffle (sft_splits)
    val_per_family: int = 24
    samples: int = 0  # sampled answers per prompt, besides the greedy one
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    max_prompt_tokens: int = 512
    split: str = "train"  # "validation": the validation slices' prompts (a fidelity set, never training data)

    def validate(self) -> None:
        if self.split not in ("train", "validation"):
            raise IfpruneError(f"--split must be train or validation, got {self.split!r}")
        if self.per_family < 1 or self.per_family > self.before:
            raise IfpruneError(f"--per-family must be in [1, --before={self.before}], got {self.per_family}")
        if self.samples < 0 or self.max_new_tokens < 1:
            raise IfpruneError("--samples must be >= 0 and --max-new-tokens >= 1")


def tokenizer_sha256(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    template = getattr(tokenizer, "chat_template", None) or ""
    return hashlib.sha256(json.dumps([vocab, template]).encode()).hexdigest()[:16]


def prompt_pool(root: Path, cfg: TeacherConfig) -> list[tuple[str, str, int]]:
    """(family, prompt, position) of each family's first `per_family` training prompts (a prefix of the order
    `sft_splits` trains on: validation slices and reserved eval prompts already out)."""
    from .data_sft import sft_splits

    pool = []
    for fam in cfg.families:
        train, val = sft_splits(root, [fam], max_per_family=cfg.per_family, val_per_family=cfg.val_per_family,
                                seed=cfg.seed)
        pool += [(fam, e.prompt, i) for i, e in enumerate(val if cfg.split == "validation" else train)]
    return pool


def read_rows(path: Path) -> dict[str, dict]:
    """The complete rows of an answers file, by id (a cut last line is dropped and logged)."""
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows

    def bad(n, why):
        print(f"teacher: dropping line {n} of {path} ({why}): it is regenerated", file=sys.stderr)

    for _, r in iter_jsonl(path, on_bad=bad):
        if isinstance(r.get("id"), str) and isinstance(r.get("response"), str):
            rows[r["id"]] = r
    return rows


def check_header(out: Path, header: dict) -> None:
    """Refuse to extend answers made by other weights, tokenizer, sampling or prompts."""
    path = out / "header.json"
    if not path.is_file():
        if (out / "answers.jsonl").exists():
            raise IfpruneError(f"{out} has answers.jsonl but no header.json: its provenance is unknown; "
                               "move it away or pick another --out")
        write_json(path, header)
        return
    grow = ("per_family",)  # more prompts of the same order extend the same answers
    added = {"config.split": "train"}  # keys newer than some headers: absent means the value they had then

    def flat(h: dict) -> dict:
        h = json.loads(json.dumps(h))  # as stored (tuples become lists)
        return {**{k: v for k, v in h.items() if k != "config"},
                **{f"config.{k}": v for k, v in (h.get("config") or {}).items() if k not in grow}}

    old_, new_ = {**added, **flat(json.loads(path.read_text()))}, flat(header)
    diff = {k: (old_.get(k), new_.get(k)) for k in new_ if old_.get(k) != new_.get(k)}
    if diff:
        what = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise IfpruneError(f"{out} holds teacher answers made differently ({what}): pick another --out")


def generate_teacher(out: Path, cfg: TeacherConfig, *, model_path: Path | None = None, threads: int = 1,
                     data_dir: Path | None = None, limit: int | None = None) -> dict:
    """Write (or resume) the teacher answers into `out`; returns counts and tokens/s."""
    from transformers import AutoTokenizer

    from ..core.loading import default_gguf_path
    from ..core.prompting import encode_prompt
    from ..runtime.generation import SamplingConfig
    from ..runtime.llamacpp import Engine
    from ..runtime.segment import run_segment
    from .config import default_data_dir

    cfg.validate()
    model_path = Path(model_path) if model_path is not None else default_gguf_path()
    if model_path.suffix != ".gguf" or not model_path.is_file():
        raise IfpruneError(f"--model must be a .gguf file the llama.cpp runtime can read, got {model_path}")
    tokenizer = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    header = {"format": FORMAT, "model": model_path.name, "model_sha256": file_sha256(model_path),
              "tokenizer_sha256": tokenizer_sha256(tokenizer), "engine": "llama.cpp (runtime.llamacpp)",
              "data_dir_manifest": _manifest_sha(root), "config": asdict(cfg)}
    out.mkdir(parents=True, exist_ok=True)
    check_header(out, header)
    answers = out / "answers.jsonl"
    done = read_rows(answers)
    _rewrite_complete(answers, done)
    pool = prompt_pool(root, cfg)
    eos = [i for i in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} if isinstance(i, int)]
    engine = Engine(model_path, threads=threads, n_ctx=cfg.max_prompt_tokens + cfg.max_new_tokens + 8)
    kinds = [("greedy", SamplingConfig(max_new_tokens=cfg.max_new_tokens))] + [
        (f"sample{s}", SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                      top_p=cfg.top_p, seed=s)) for s in range(cfg.samples)]
    made, tokens, t0 = 0, 0, time.perf_counter()
    # ids name the prompt's text, so a larger --per-family extends the same answers; families interleaved, so
    # an interrupted run has covered each alike
    todo = [(f"{fam}-{_text_id(prompt)}-{kind}", fam, prompt, kind, sampling)
            for pos, fam, prompt in sorted((pos, fam, prompt) for fam, prompt, pos in pool)
            for kind, sampling in kinds]
    todo = [t for t in todo if t[0] not in done]
    if limit is not None:
        todo = todo[:limit]
    from tqdm import tqdm

    with open(answers, "a", encoding="utf-8") as f:
        for rid, fam, prompt, kind, sampling in tqdm(todo, desc="teacher answers", unit="answer",
                                                      disable=not sys.stderr.isatty()):
            ids = encode_prompt(tokenizer, prompt)
            if ids.shape[1] > cfg.max_prompt_tokens:
                row = {"id": rid, "family": fam, "kind": kind, "prompt": prompt, "response": "", "skipped":
                       f"prompt of {ids.shape[1]} tokens > max_prompt_tokens"}
            else:
                if sampling.seed is not None:
                    torch.manual_seed(zlib.crc32(rid.encode()))
                seq = run_segment(engine, ids, cfg.max_new_tokens, sampling, eos)
                new = seq[0, ids.shape[1]:].tolist()
                tokens += len(new)
                finished = bool(new) and new[-1] in eos
                row = {"id": rid, "family": fam, "kind": kind, "prompt": prompt,
                       "response": tokenizer.decode(new, skip_special_tokens=True), "tokens": len(new),
                       "finished": finished}
            f.write(json.dumps(row) + "\n")
            f.flush()
            made += 1
            if made % 20 == 0:
                os.fsync(f.fileno())
    engine.close()
    wall = time.perf_counter() - t0
    return {"made": made, "had": len(done), "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall if wall else 0.0}


REPEAT_MIN_CHARS = 20  # a sentence or line this long, said three times, is the answer repeating itself
REPEAT_TIMES = 3


def repeats_itself(text: str) -> bool:
    """Whether one sentence or line of at least REPEAT_MIN_CHARS characters occurs REPEAT_TIMES times in `text`:
    a finished answer can still loop for a while ("def f(x): ..." five times, then the end of the turn), and a
    student trained on such answers learns to loop."""
    parts = [p for p in map(str.strip, re.split(r"[.\n]", text)) if len(p) >= REPEAT_MIN_CHARS]
    return any(n >= REPEAT_TIMES for n in Counter(parts).values())


def with_teacher(examples: list, folder: str | Path, model_path: Path | None = None, *,
                 drop_repeats: bool = False) -> list:
    """`examples` (SFTExample) with each response replaced by the teacher's finished greedy answer to its prompt;
    prompts the teacher has not answered (or whose answer was cut at max_new_tokens) are left out, and with
    `drop_repeats` those whose answer `repeats_itself`. Refuses a folder without provenance or made by another
    model file than `model_path` (when given)."""
    from dataclasses import replace

    folder = Path(folder)
    header_path = folder / "header.json"
    if not header_path.is_file():
        raise IfpruneError(f"data.teacher {folder} has no header.json: make it with python -m ifprune.training.teacher")
    header = json.loads(header_path.read_text())
    if header.get("format") != FORMAT:
        raise IfpruneError(f"data.teacher {folder} is of format {header.get('format')!r}, not {FORMAT}")
    if (header.get("config") or {}).get("split", "train") != "train":
        raise IfpruneError(f"data.teacher {folder} answers the validation prompts (a fidelity set): training on it "
                           "would train on what the runs are chosen by; use a --split train folder")
    if model_path is not None and header.get("model_sha256") != file_sha256(model_path):
        raise IfpruneError(f"data.teacher {folder} holds answers of {header.get('model')} "
                           f"(sha256 {str(header.get('model_sha256'))[:12]}), not of {Path(model_path).name}, the "
                           "model being trained: make teacher answers with this model")
    answers = {(r["family"], r["prompt"]): r["response"] for r in read_rows(folder / "answers.jsonl").values()
               if r.get("kind") == "greedy" and r.get("finished") and r.get("response", "").strip()
               and not (drop_repeats and repeats_itself(r["response"]))}
    out = [replace(e, response=answers[(e.family, e.prompt)]) for e in examples if (e.family, e.prompt) in answers]
    if not out:
        raise IfpruneError(f"data.teacher {folder} answers none of these training prompts: generate them first "
                           "(python -m ifprune.training.teacher --out ... with the same families and seed)")
    return out


def eval_rows(folder: str | Path) -> list[dict]:
    """A teacher folder's greedy answers as `ifprune eval nll --data` rows (id, family, prompt, response): every
    non-empty one, finished or cut at max_new_tokens (what the dense model says first is what is measured)."""
    rows = [r for r in read_rows(Path(folder) / "answers.jsonl").values()
            if r.get("kind") == "greedy" and r.get("response", "").strip()]
    return [{"id": r["id"], "family": r["family"], "prompt": r["prompt"], "response": r["response"]}
            for r in sorted(rows, key=lambda r: r["id"])]


def _text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _manifest_sha(root: Path) -> str | None:
    p = root / "MANIFEST.tsv"
    return file_sha256(p)[:16] if p.is_file() else None


def _rewrite_complete(path: Path, rows: dict[str, dict]) -> None:
    """Drop a cut last line before appending (atomically), so the file holds complete rows only."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    from ..core.paths import write_text

    write_text(path, "".join(json.dumps(r) + "\n" for r in rows.values()))


def main(argv=None) -> int:
    d = TeacherConfig()
    p = argparse.ArgumentParser(prog="python -m ifprune.training.teacher", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for header.json and answers.jsonl (resumed when it exists)")
    p.add_argument("--model", default=None, help="dense model GGUF (default: the packaged SmolLM2-135M-Instruct)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--families", default=",".join(d.families))
    p.add_argument("--per-family", type=int, default=d.per_family)
    p.add_argument("--samples", type=int, default=d.samples, help="sampled answers per prompt besides the greedy one")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--limit", type=int, default=None, help="stop after this many new answers (resume later)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--split", choices=("train", "validation"), default="train",
                   help="validation: answer the validation slices' prompts (a fidelity set, refused as training data)")
    p.add_argument("--val-per-family", type=int, default=d.val_per_family)
    p.add_argument("--write-eval", default=None, metavar="FILE",
                   help="then write the greedy answers as JSONL for ifprune eval nll --data FILE")
    a = p.parse_args(argv)
    cfg = TeacherConfig(families=tuple(a.families.split(",")), per_family=a.per_family, samples=a.samples,
                        max_new_tokens=a.max_new_tokens, split=a.split, val_per_family=a.val_per_family)
    try:
        res = generate_teacher(Path(a.out), cfg, model_path=a.model, threads=a.threads, data_dir=a.data_dir,
                               limit=a.limit)
    except IfpruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.write_eval:
        from ..core.paths import write_text

        rows = eval_rows(a.out)
        write_text(a.write_eval, "".join(json.dumps(r) + "\n" for r in rows))
        res["eval_rows"] = len(rows)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
