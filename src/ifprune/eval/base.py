"""The suite interface and the loop that runs one suite for one selector and width, with resume."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from .cache import ResultCache, config_hash
from .data import Example, LoadReport, default_data_dir, finish_report
from .scorer import Scorer
from .statistics import summarise


class Suite:
    """A benchmark: loads examples from the local data, evaluates one, aggregates many.

    `evaluate` returns a JSON-able dict with at least `num` and `den` (the primary metric of this
    example as a ratio: correct/1, or summed NLL/tokens) and anything else worth keeping.
    """

    name = "base"
    primary = "accuracy"
    higher_is_better = True
    generation = False
    files: tuple[str, ...] = ()  # relative to the data directory
    task = "Respond to the user's request."  # what per-task selection reads (`task_for`)

    def __init__(self, data_dir: str | Path | None = None, data: str | Path | None = None, strict: bool = False,
                 max_new_tokens: int | None = None):
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.data = Path(data) if data is not None else None
        self.strict = strict
        if max_new_tokens is not None:
            if max_new_tokens < 1:
                raise IfpruneError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
            self.max_new_tokens = max_new_tokens
        self.reports: list[LoadReport] = []

    def options(self) -> dict:
        return {"max_new_tokens": getattr(self, "max_new_tokens", None)}

    def load(self) -> list[Example]:
        raise NotImplementedError

    def data_files(self) -> list[Path]:
        """The files this suite reads (hashed into the result, so a changed file is a new run)."""
        raise NotImplementedError

    def evaluate(self, scorer: Scorer, ex: Example) -> dict:
        raise NotImplementedError

    def task_for(self, ex: Example) -> str:
        """The task description a per-task selector selects from for this example."""
        return self.task

    def take(self, examples: list[Example], limit: int | None) -> list[Example]:
        """The first `limit` examples (suites with sub-tasks apply it per task)."""
        return examples if limit is None else examples[:limit]

    def metrics(self, rows: list[dict]) -> dict[str, dict]:
        """Named metrics with bootstrap intervals; the primary one is computed from num/den."""
        return {self.primary: summarise([r["num"] for r in rows], [r["den"] for r in rows])}


@dataclass
class SuiteResult:
    suite: str
    selector: str
    width: int
    d_ffn: int
    keep: float
    active_params: int
    total_params: int
    primary: str
    higher_is_better: bool
    metrics: dict[str, dict]
    examples: int
    cached: int
    skipped_rows: int
    wall_s: float
    timings: dict
    model: str
    model_hash: str
    data_hash: str
    config_hash: str
    cache_file: str | None
    options: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list, repr=False)  # per example (in the cache file; not in to_dict)

    def to_dict(self) -> dict:
        import copy
        from dataclasses import fields

        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "rows"}


def machine_info() -> dict:
    import os

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run_suite(suite: Suite, scorer: Scorer, *, limit: int | None = None, cache_dir: str | Path | None = None,
              progress: bool = True) -> SuiteResult:
    """Evaluate up to `limit` examples, reusing per-example results cached under `cache_dir`."""
    from .data import file_hash

    if limit is not None and limit < 1:
        raise IfpruneError(f"--limit must be >= 1, got {limit}")
    examples = suite.load()
    for rep in suite.reports:
        finish_report(rep)
    if not examples:
        raise IfpruneError(f"suite {suite.name} found no usable examples in {', '.join(map(str, suite.data_files()))}")
    examples = suite.take(examples, limit)
    data_hash = config_hash({str(p.name): file_hash(p) for p in suite.data_files()})
    cfg = {"suite": suite.name, "suite_options": suite.options(), "data": data_hash, **scorer.config(), "format": 1}
    chash = config_hash(cfg)
    cache_path = Path(cache_dir) / suite.name / f"{chash}.jsonl" if cache_dir is not None else None
    cache = ResultCache(cache_path)
    rows, cached = [], 0
    t0 = time.perf_counter()
    from tqdm.auto import tqdm

    label = f"{suite.name} {scorer.label or scorer.selector.name} {scorer.width}/{scorer.lm.d_ffn}"
    for ex in tqdm(examples, desc=label, disable=not progress, leave=False):
        row = cache.get(ex.id)
        if row is None:
            scorer.example_task = suite.task_for(ex)
            try:
                row = {"id": ex.id, **suite.evaluate(scorer, ex)}
            except (IfpruneError, KeyboardInterrupt):
                raise
            except Exception as e:  # a checker or model failure: say where, keep what is done
                kept = f"the {len(rows)} examples before it are cached in {cache_path}" if cache_path else "nothing was cached (--no-cache)"
                raise IfpruneError(f"suite {suite.name} failed on example {ex.id!r}: {type(e).__name__}: {e}; "
                                   f"{kept}; rerun after fixing the cause to go on from there") from e
            cache.put(row)
        else:
            cached += 1
        rows.append(row)
    wall = time.perf_counter() - t0
    lm = scorer.lm
    return SuiteResult(
        suite=suite.name, selector=scorer.label or scorer.selector.name, width=scorer.width, d_ffn=lm.d_ffn,
        keep=scorer.width / lm.d_ffn, active_params=lm.active_params(scorer.width), total_params=lm.total_params(),
        primary=suite.primary, higher_is_better=suite.higher_is_better, metrics=suite.metrics(rows),
        examples=len(rows), cached=cached, skipped_rows=sum(r.skipped for r in suite.reports), wall_s=wall,
        timings=dict(scorer.timings), model=lm.source, model_hash=lm.fingerprint(), data_hash=data_hash,
        config_hash=chash, cache_file=str(cache_path) if cache_path else None,
        options={**suite.options(), **scorer.described()}, machine=machine_info(), rows=rows,
    )
