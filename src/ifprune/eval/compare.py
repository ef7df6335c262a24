"""One command's worth of comparison: chosen suites x selectors x keep ratios on one model, written
as JSON (every number, with intervals, hashes and timings) and a markdown table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import IfpruneError
from ..core.paths import write_json, write_text
from ..core.plan import width_from_keep
from ..selection.refresh import DEFAULT_TOKENS, to_mode
from ..selection.selectors import make_selector
from . import make_suite
from .base import machine_info, run_suite
from .scorer import Scorer
from .statistics import MIN_PAIRED, paired


@dataclass
class CompareConfig:
    suites: list[str]
    selectors: list[str]
    keeps: list[float]
    limits: dict[str, int | None] = field(default_factory=dict)  # per suite; missing = all examples
    data_dir: str | None = None
    calibration: str | None = None
    seed: int = 0
    max_new_tokens: int | None = None
    mc_tasks: list[str] | None = None
    nll_data: str | None = None  # JSONL for the nll suite instead of its validation mix
    cache_dir: str | None = None
    command: str = ""
    compensations: list[str] = field(default_factory=lambda: ["calibration"])  # modes, each a row
    calibration_tokens: int | None = None
    ridge: float | None = None

    def compensation(self, mode: str):
        from ..compensation.calibration import CompensationConfig

        d = CompensationConfig()
        return CompensationConfig(mode=mode, calibration=self.calibration,
                                  max_tokens=self.calibration_tokens or d.max_tokens,
                                  ridge=self.ridge if self.ridge is not None else d.ridge)

    def validate(self) -> None:
        if not self.suites or not self.selectors or not self.keeps:
            raise IfpruneError("compare needs at least one suite, one selector and one keep ratio")
        for k in self.keeps:
            if not 0 < k <= 1:
                raise IfpruneError(f"keep ratio {k} is out of range: use fractions in (0, 1], e.g. 0.5 0.333")
        if not self.compensations:
            raise IfpruneError("compare needs at least one compensation mode (e.g. --compensations none calibration)")
        for mode in self.compensations:
            self.compensation(mode)  # validates the mode and settings


@dataclass
class SelectorSpec:
    """One `--selectors` entry: a selector name, or a trained artifact as `predictor:DIR` (per input;
    a learned-static artifact gives one plan) or `predictor-task:DIR` (one plan per task description);
    `+reselect-everyN` after the name re-selects after every N answer tokens (selection.refresh), `+reselect-onceN`
    once after N, `+reselect-off` never; N left out: the artifact's own, else 32 (as `--reselect` without
    `--reselect-tokens`), e.g. `predictor+reselect-once32:DIR`; without any an artifact trained under re-selection
    (recipe `refresh: R`) runs its default, every R with a dense-answer prefill. The earlier `+refreshR` (once),
    `+refresh-everyR`, `+refresh-once` and `+refresh0` still parse, with a FutureWarning.
    `+dense-prefill`, `+dense-answer-prefill`, `+kept-prefill` or `+pruned-prefill` (last) names the prefill
    (selection.prefill; default: dense-answer when re-selecting every N), e.g. `predictor+reselect-every32+dense-prefill:DIR`."""

    spec: str
    name: str
    checkpoint: str | None = None
    per_task: bool = False
    refresh: int | None = None
    refresh_every: bool | None = None  # None: the artifact's default (selection.refresh.resolve_reselection)
    prefill: str | None = None  # None: selection.refresh.resolve_reselection's default

    @classmethod
    def parse(cls, spec: str) -> "SelectorSpec":
        import dataclasses
        import re

        name, sep, path = spec.partition(":")
        m = re.fullmatch(r"(.+)\+(dense-answer|dense|pruned|kept)-prefill", name)
        if m:
            if m.group(1) == "dense":
                raise IfpruneError(f"selector {spec!r}: dense runs every token through the full model already")
            inner = cls.parse(m.group(1) + sep + path)
            return dataclasses.replace(inner, spec=spec, prefill=m.group(2))
        m = re.fullmatch(r"(.+)\+reselect-(off|once|every)(\d*)", name)
        if m:
            if m.group(1) == "dense":
                raise IfpruneError(f"selector {spec!r}: dense keeps every channel; there is nothing to re-select")
            if m.group(2) == "off" and m.group(3):
                raise IfpruneError(f"selector {spec!r}: +reselect-off takes no token count")
            inner = cls.parse(m.group(1) + sep + path)
            if m.group(2) == "off":
                return dataclasses.replace(inner, spec=spec, refresh=0, refresh_every=None)
            n = int(m.group(3)) if m.group(3) else None
            if n is not None and n < 1:
                raise IfpruneError(f"selector {spec!r}: re-selection needs a token count >= 1 (+reselect-off: never)")
            if n is None:  # as --reselect alone: the artifact's own N, else the default
                from ..selection.artifact import recipe_refresh

                art = inner.artifact_config()
                n = (recipe_refresh(art) if art is not None else None) or DEFAULT_TOKENS
            return dataclasses.replace(inner, spec=spec, refresh=n, refresh_every=m.group(2) == "every")
        if re.fullmatch(r"(.+)\+refresh(-once|-every\d+|\d*)", name):
            import warnings

            warnings.warn(f"selector {spec!r}: +refresh... is the earlier spelling and goes in the next release: write "
                          "+reselect-everyN, +reselect-onceN or +reselect-off", FutureWarning, stacklevel=2)
        m = re.fullmatch(r"(.+)\+refresh-once", name)
        if m:  # the artifact's own R, once (its default before re-selection every R): rows measured then
            inner = cls.parse(m.group(1) + sep + path)
            return dataclasses.replace(inner, spec=spec, refresh_every=False)
        m = re.fullmatch(r"(.+)\+refresh-every(\d+)", name)
        if m:
            if m.group(1) == "dense" or int(m.group(2)) < 1:
                raise IfpruneError(f"selector {spec!r}: +refresh-everyR re-selects a pruned model after every R >= 1 tokens")
            inner = cls.parse(m.group(1) + sep + path)
            return dataclasses.replace(inner, spec=spec, refresh=int(m.group(2)), refresh_every=True)
        m = re.fullmatch(r"(.+)\+refresh(\d*)", name)
        if m:
            if not m.group(2):
                raise IfpruneError(f"selector {spec!r}: +refresh needs a token count, e.g. {m.group(1)}+refresh32 "
                                   f"(+refresh0: off)")
            if m.group(1) == "dense":
                raise IfpruneError(f"selector {spec!r}: dense keeps every channel; there is nothing to re-select")
            inner = cls.parse(m.group(1) + sep + path)
            return dataclasses.replace(inner, spec=spec, refresh=int(m.group(2)), refresh_every=False)
        if name in ("predictor", "predictor-task"):
            if not sep or not path:
                from ..artifacts import DEFAULT_MODEL_ARTIFACT

                if not (DEFAULT_MODEL_ARTIFACT / "config.json").is_file():
                    raise IfpruneError(f"selector {spec!r}: name the artifact, e.g. {name}:runs/x/artifact")
                path = str(DEFAULT_MODEL_ARTIFACT)  # as `generate` does: the shipped artifact
            if not (Path(path) / "config.json").is_file():
                raise IfpruneError(f"selector {spec!r}: {path} is not a trained artifact (no config.json there)")
            return cls(spec, "predictor", path, per_task=name == "predictor-task")
        if sep:
            raise IfpruneError(f"selector {spec!r}: only predictor:DIR and predictor-task:DIR take a path")
        return cls(spec, name)

    def artifact_config(self) -> dict | None:
        import json

        return json.loads((Path(self.checkpoint) / "config.json").read_text()) if self.checkpoint else None

    def effective_refresh(self, art: dict | None = None) -> int | None:
        """What runs: the +refreshR given, else the artifact's own default (selection.refresh)."""
        if self.refresh is not None:
            return self.refresh or None
        from ..selection.artifact import recipe_refresh

        art = art if art is not None else self.artifact_config()
        return recipe_refresh(art) if art is not None else None

    def effective_every(self, art: dict | None = None) -> bool:
        """selection.refresh.repeats with the R that runs: every R when R is the artifact's own default."""
        from ..selection.refresh import repeats

        return repeats(self.refresh_every, self.refresh, self.effective_refresh(art))

    def label(self) -> str:
        """Name in tables: ifpruning / ifpruning-task / learned-static / dense-sft for artifacts, then what runs:
        +reselect-onceN, +reselect-everyN, +dense-prefill, +dense-answer-prefill or +kept-prefill."""
        from ..selection.prefill import resolve_prefill

        art = self.artifact_config()
        every = self.effective_every(art)
        prefill = resolve_prefill(self.prefill, every)
        tail = (f"+reselect-{'every' if every else 'once'}{r}" if (r := self.effective_refresh(art)) else "") + (
            f"+{prefill}-prefill" if prefill != "pruned" else "")
        if art is None:
            return self.name + tail
        if art["kind"] == "static":
            # trained with every channel kept (keep 1.0): the dense model fine-tuned by the same loop
            return ("dense-sft" if art.get("width") == art.get("d_ffn") else "learned-static") + tail
        return ("ifpruning-task" if self.per_task else "ifpruning") + tail


def row_labels(specs: list[SelectorSpec]) -> dict[str, str]:
    """spec -> table label; artifacts that would share a label get the shortest tail of their
    paths that tells them apart, e.g. ifpruning[v1] and ifpruning[keep50-sft]."""
    base = {s.spec: s.label() for s in specs}
    out = dict(base)
    for label in set(base.values()):
        group = [s for s in specs if base[s.spec] == label and s.checkpoint]
        if len(group) < 2:
            continue
        parts = {s.spec: [q for q in Path(s.checkpoint).resolve().parts if q != "artifact"] for s in group}
        for n in range(1, max(len(v) for v in parts.values()) + 1):
            tails = {k: "/".join(v[-n:]) for k, v in parts.items()}
            if len(set(tails.values())) == len(tails):
                break
        for k, tail in tails.items():
            out[k] = f"{label}[{tail}]"
    return out


def configurations(cfg: CompareConfig, d_ffn: int) -> list[tuple[SelectorSpec, int]]:
    """(selector, width) pairs; dense runs once, at full width, whatever the keeps; an artifact runs
    at the width it was trained for."""
    out = []
    for spec in map(SelectorSpec.parse, cfg.selectors):
        if spec.name == "dense":
            widths = [d_ffn]
        elif spec.checkpoint:
            widths = [int(spec.artifact_config()["width"])]
        else:
            widths = [width_from_keep(k, None, d_ffn) for k in cfg.keeps]
        out += [(spec, w) for w in dict.fromkeys(widths)]
    return out


def build_selector(spec: SelectorSpec, lm, cfg: CompareConfig, load_fresh=None):
    """(selector, model): an artifact changes its model's weights (LoRA merged), so it gets a fresh
    copy of the base model from `load_fresh()`; every other selector shares `lm`."""
    selector = make_selector(spec.name, seed=cfg.seed, calibration=cfg.calibration, checkpoint=spec.checkpoint)
    if spec.checkpoint is None:
        return selector, lm
    if load_fresh is None:
        raise IfpruneError(f"selector {spec.spec} needs a way to load a fresh base model (load_fresh)")
    model = load_fresh()
    selector.artifact.attach(model)
    return selector, model


def run_compare(lm, cfg: CompareConfig, *, progress: bool = True, on_result=None, load_fresh=None) -> dict:
    """`on_result(result, report_so_far)` after each (selector, width, suite), e.g. to write a
    partial table that an interrupted run leaves behind (`report["complete"]` is False there).
    `load_fresh()` loads another copy of the base model, for trained artifacts."""
    cfg.validate()
    for s in cfg.suites:  # fail on a bad suite name before any work
        make_suite(s, data_dir=cfg.data_dir, tasks=cfg.mc_tasks)
    results = []
    t0 = time.perf_counter()

    def report(complete: bool) -> dict:
        return {"format": "ifprune-compare/1", "complete": complete, "command": cfg.command, "model": lm.source,
                "model_hash": lm.fingerprint(), "total_params": lm.total_params(), "d_ffn": lm.d_ffn,
                "num_layers": lm.num_layers, "limits": cfg.limits, "keeps": cfg.keeps, "selectors": cfg.selectors,
                "suites": cfg.suites, "compensations": cfg.compensations,
                "wall_s": time.perf_counter() - t0, "machine": machine_info(),
                "results": list(results)}
    from ..compensation.calibration import compensate

    labels = row_labels([SelectorSpec.parse(x) for x in cfg.selectors])
    reference: dict = {}  # suite -> (label, width, per-example rows) of its first row, which the others pair with
    for spec, width in configurations(cfg, lm.d_ffn):
        selector, model = build_selector(spec, lm, cfg, load_fresh)
        modes = ["none"] if width == lm.d_ffn else cfg.compensations  # dense: nothing to compensate
        for mode in modes:
            compensate(model, cfg.compensation(mode), progress=progress)
            # several modes: one row each, named selector+mode; one mode: plain names (mode in the header)
            label = labels[spec.spec] + ("" if mode == "none" or len(cfg.compensations) == 1 else f"+{mode}")
            for suite_name in cfg.suites:
                suite = make_suite(suite_name, data_dir=cfg.data_dir, max_new_tokens=cfg.max_new_tokens,
                                   tasks=cfg.mc_tasks, data=cfg.nll_data if suite_name == "nll" else None)
                mode, tokens = (to_mode(spec.refresh, spec.refresh_every, selector)
                                if spec.refresh is not None or spec.refresh_every is not None else (None, None))
                scorer = Scorer(model, selector, width, per_task=spec.per_task, label=label, reselect=mode,
                                reselect_tokens=tokens, prefill=spec.prefill)
                result = run_suite(suite, scorer, limit=cfg.limits.get(suite_name), cache_dir=cfg.cache_dir,
                                   progress=progress)
                res = result.to_dict()
                first = reference.setdefault(suite_name, (res["selector"], res["width"], result.rows))
                if first[:2] != (res["selector"], res["width"]):
                    res["paired"] = {"reference": first[0], "reference_width": first[1],
                                     **(paired(first[2], result.rows) or {"n": 0})}
                results.append(res)
                if on_result:
                    on_result(res, report(False))
        compensate(model, "none")
    return report(True)


def _fmt(v: float, m: dict) -> str:
    lo, hi = m["ci95"]
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(report: dict) -> str:
    res = report["results"]
    suites = report["suites"]
    mach = report["machine"]
    lines = [f"# Selector comparison: {report['model']}", "",
             f"- model hash `{report['model_hash']}`, {report['total_params'] / 1e6:.1f}M parameters, "
             f"{report['num_layers']} layers, FFN width {report['d_ffn']}",
             f"- machine: {mach['platform']}, {mach['cpus']} CPUs ({mach['threads']} torch threads), torch {mach['torch']}, {mach['date']}",
             f"- command: `{report['command']}`",
             "- output compensation (pruned rows): " + ", ".join(report.get("compensations", ["none"]))
             + ("" if len(report.get("compensations", [])) < 2 else " (rows named selector+mode)"),
             "- limits (examples per suite; mc: per task): " + ", ".join(f"{s}={report['limits'].get(s) or 'all'}" for s in suites),
             f"- total wall time {report['wall_s'] / 60:.1f} min (per-example results reused from the resume cache count as 0 s)",
             *([] if report.get("complete", True) else
               ["", "**PARTIAL: the run was interrupted; only the configurations below are done. Re-run the same "
                "command to finish (completed examples are read from the cache).**"]), "",
             "Primary metric per suite, with 95% bootstrap interval over examples (nll: lower is better; others: higher).", ""]
    keyset = []
    for r in res:
        k = (r["selector"], r["width"])
        if k not in keyset:
            keyset.append(k)
    head = ["selector", "keep", "active params"] + [f"{s} ({next((r['primary'] for r in res if r['suite'] == s), '')})" for s in suites]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sel, width in keyset:
        rows = {r["suite"]: r for r in res if r["selector"] == sel and r["width"] == width}
        any_r = next(iter(rows.values()))
        cells = [sel, f"{any_r['keep']:.3f} ({width}/{any_r['d_ffn']})", f"{any_r['active_params'] / 1e6:.1f}M"]
        for s in suites:
            r = rows.get(s)
            cells.append(_fmt(r["metrics"][r["primary"]]["value"], r["metrics"][r["primary"]]) if r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += paired_table(res)
    lines += ["", "## All metrics", "", "| suite | selector | keep | metric | value [95% CI] | n | wall s | data hash | config |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        for name, m in r["metrics"].items():
            lines.append(f"| {r['suite']} | {r['selector']} | {r['keep']:.3f} | {name} | {_fmt(m['value'], m)} | {m['n']} | "
                         f"{r['wall_s']:.0f} | `{r['data_hash']}` | `{r['config_hash']}` |")
    return "\n".join(lines) + "\n"


def paired_table(res: list[dict]) -> list[str]:
    """Markdown lines: each row's primary metric minus its suite's first row's, on the examples both scored."""
    rows = [r for r in res if "paired" in r]
    if not rows:
        return []
    out = ["", "## Paired differences", "",
           "Each row minus the first row of its suite, on the same examples (95% bootstrap interval of the per-example "
           "differences). *not separated*: the interval holds 0, so these examples cannot tell the two rows apart.",
           "", "| suite | row | keep | minus | difference [95% CI] | n | |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["paired"]
        if not p["n"]:
            out.append(f"| {r['suite']} | {r['selector']} | {r['keep']:.3f} | {p['reference']} | - | 0 | "
                       "not paired (no example scored over the same tokens) |")
            continue
        lo, hi = p["ci95"]
        better = (p["b_minus_a"] > 0) == r["higher_is_better"]
        verdict = (("better" if better else "worse") if p["separated"] else
                   f"too few to tell (< {MIN_PAIRED})" if p["n"] < MIN_PAIRED else "not separated")
        left = f" ({p['unpaired']} scored over other tokens, left out)" if p.get("unpaired") else ""
        out.append(f"| {r['suite']} | {r['selector']} | {r['keep']:.3f} | {p['reference']} | "
                   f"{p['b_minus_a']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {p['n']} | {verdict}{left} |")
    return out


def write_report(report: dict, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    write_json(out / "results.json", report)
    write_text(out / "results.md", markdown(report))
    return out / "results.json", out / "results.md"
