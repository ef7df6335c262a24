"""A comparison grid as a small YAML file (`ifprune compare GRID.yaml`): each row's selector, artifact,
re-selection and prefill as keys, not as a name to spell. Rows become the `SelectorSpec` strings that results
have always been labelled with, so a grid's tables read like every earlier one.

    suites: [nll, mc]
    keeps: [0.5, 0.75]
    limits: {nll: 120, mc: 500}
    rows:
      - selector: dense
      - selector: griffin
      - selector: predictor            # the shipped keep-3/4 artifact, at its own width, or `artifact: DIR`
        reselect: every                # off | once | every (default: the artifact's own)
        tokens: 32                     # answer tokens between re-selections (default: the artifact's, else 32)
        prefill: dense-answer          # pruned | dense | dense-answer | kept
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import IfpruneError

TOP_KEYS = ("suites", "keeps", "limits", "compensations", "rows")
ROW_KEYS = ("selector", "artifact", "per_task", "reselect", "tokens", "prefill")
PREFILLS = ("pruned", "dense", "dense-answer", "kept")


def row_spec(row: dict, where: str = "row") -> str:
    """The `--selectors` string of one grid row (eval.compare.SelectorSpec parses it)."""
    if not isinstance(row, dict) or "selector" not in row:
        raise IfpruneError(f"{where}: each row is a mapping with at least `selector:`, got {row!r}")
    bad = sorted(set(row) - set(ROW_KEYS))
    if bad:
        raise IfpruneError(f"{where}: unknown key(s) {', '.join(bad)}; a row takes {', '.join(ROW_KEYS)}")
    name = str(row["selector"])
    if row.get("per_task"):
        if name != "predictor":
            raise IfpruneError(f"{where}: per_task applies to the predictor (one plan per task description)")
        name = "predictor-task"
    mode, tokens, prefill = row.get("reselect"), row.get("tokens"), row.get("prefill")
    if mode is not None and mode not in ("off", "once", "every"):
        raise IfpruneError(f"{where}: reselect must be off, once or every, got {mode!r}")
    if tokens is not None and (mode in (None, "off") or isinstance(tokens, bool) or not isinstance(tokens, int)
                               or tokens < 1):
        raise IfpruneError(f"{where}: tokens needs reselect once or every and a whole number >= 1, got {tokens!r}")
    if prefill is not None and prefill not in PREFILLS:
        raise IfpruneError(f"{where}: prefill must be one of {', '.join(PREFILLS)}, got {prefill!r}")
    if mode is not None:
        name += f"+reselect-{mode}" + (str(tokens) if tokens is not None else "")
    if prefill is not None:
        name += f"+{prefill}-prefill"
    artifact = row.get("artifact")
    return f"{name}:{artifact}" if artifact is not None else name


def load_grid(path: str | Path) -> dict:
    """{suites, keeps, limits, compensations, selectors} from a grid file; every mistake is one line naming the
    key and what it takes."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise IfpruneError(f"grid file {p} does not exist: give a YAML file (see `ifprune compare --help`)")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise IfpruneError(f"grid file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise IfpruneError(f"grid file {p}: the top level is a mapping of {', '.join(TOP_KEYS)}")
    bad = sorted(set(raw) - set(TOP_KEYS))
    if bad:
        raise IfpruneError(f"grid file {p}: unknown key(s) {', '.join(bad)}; it takes {', '.join(TOP_KEYS)}")
    rows = raw.get("rows")
    if not isinstance(rows, list) or not rows:
        raise IfpruneError(f"grid file {p}: `rows:` lists at least one row, e.g. - selector: dense")
    limits = raw.get("limits") or {}
    if not isinstance(limits, dict):
        raise IfpruneError(f"grid file {p}: limits is a mapping of suite to N, e.g. {{nll: 120}}")
    return {"suites": _strings(raw.get("suites"), "suites", p), "keeps": [float(k) for k in raw.get("keeps") or []],
            "limits": [f"{k}={v}" for k, v in limits.items()],
            "compensations": _strings(raw.get("compensations"), "compensations", p) or None,
            "selectors": [row_spec(r, f"grid file {p}, row {i + 1}") for i, r in enumerate(rows)]}


def _strings(value, key: str, path: Path) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise IfpruneError(f"grid file {path}: {key} is a list of names, got {value!r}")
    return value
