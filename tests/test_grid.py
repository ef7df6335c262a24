"""`ifprune compare GRID.yaml` (eval.grid): rows written as keys become the labels every table has used, bad
grids get one-line errors, and the command runs a table end to end on a tiny model."""

import json

import pytest

from ifprune.cli import main
from ifprune.core.errors import IfpruneError
from ifprune.core.tiny import tiny_model, tiny_tokenizer
from ifprune.eval.compare import SelectorSpec
from ifprune.eval.grid import load_grid, row_spec


def test_rows_become_the_selector_labels_results_use():
    assert row_spec({"selector": "dense"}) == "dense"
    assert row_spec({"selector": "predictor", "artifact": "runs/a", "reselect": "every", "tokens": 32,
                     "prefill": "dense-answer"}) == "predictor+reselect-every32+dense-answer-prefill:runs/a"
    assert row_spec({"selector": "predictor", "per_task": True, "artifact": "d", "reselect": "off"}) == \
        "predictor-task+reselect-off:d"
    spec = SelectorSpec.parse(row_spec({"selector": "griffin", "reselect": "once", "tokens": 8, "prefill": "dense"}))
    assert (spec.name, spec.refresh, spec.refresh_every, spec.prefill) == ("griffin", 8, False, "dense")


@pytest.mark.parametrize("row,message", [
    ({"selector": "griffin", "keep": 0.5}, "unknown key(s) keep"),
    ({"selector": "griffin", "reselect": "sometimes"}, "reselect must be off, once or every"),
    ({"selector": "griffin", "tokens": 32}, "tokens needs reselect once or every"),
    ({"selector": "griffin", "reselect": "every", "tokens": 0}, "whole number >= 1"),
    ({"selector": "griffin", "prefill": "full"}, "prefill must be one of"),
    ({"selector": "griffin", "per_task": True}, "per_task applies to the predictor"),
    ({"artifact": "d"}, "at least `selector:`"),
])
def test_a_bad_row_is_named(row, message):
    with pytest.raises(IfpruneError, match=message.replace("(", r"\(").replace(")", r"\)")):
        row_spec(row, "row 1")


def test_a_bad_grid_file_is_named(tmp_path):
    with pytest.raises(IfpruneError, match="does not exist"):
        load_grid(tmp_path / "none.yaml")
    cases = {"a: [": "not valid YAML", "- 1": "top level is a mapping", "rows: []": "at least one row",
             "rows: [{selector: dense}]\nsuite: nll": "unknown key\\(s\\) suite",
             "rows: [{selector: dense}]\nlimits: [1]": "limits is a mapping",
             "rows: [{selector: dense}]\nsuites: [1, 2]": "suites is a list of names"}
    for text, message in cases.items():
        (tmp_path / "g.yaml").write_text(text)
        with pytest.raises(IfpruneError, match=message):
            load_grid(tmp_path / "g.yaml")


def test_compare_runs_a_grid_and_flags_override_it(tmp_path, data_dir, capsys):
    model = tmp_path / "m"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    grid = tmp_path / "grid.yaml"
    grid.write_text("suites: [nll]\nkeeps: [0.5]\nlimits: {nll: 2}\ncompensations: [none]\n"
                    "rows:\n  - selector: dense\n  - selector: griffin\n    reselect: once\n    tokens: 4\n")
    out = tmp_path / "out"
    assert main(["compare", str(grid), "--model", str(model), "--out", str(out), "--no-plots", "--no-progress",
                 "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"), "--keeps", "0.25"]) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert {(r["selector"], r["keep"]) for r in rows} == {("dense", 1.0), ("griffin+reselect-once4", 0.25)}
    pruned = next(r for r in rows if r["selector"] != "dense")  # paired with the suite's first row on its examples
    assert pruned["paired"]["reference"] == "dense" and pruned["paired"]["n"] >= 1, pruned["paired"]
    assert "## Paired differences" in (out / "results.md").read_text()
    capsys.readouterr()
    assert main(["compare", "--model", str(model), "--out", str(out)]) == 2
    assert "give them in a grid file" in capsys.readouterr().err
