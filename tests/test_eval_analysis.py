"""IFEval checkers offline, bootstrap intervals, compare tables and the mask-analysis plots."""

import json

import numpy as np
import pytest
import torch

from ifprune.eval.statistics import bootstrap_ci, summarise
from ifprune.core.plan import Plan
from ifprune.core.tiny import tiny_lm


def test_ifeval_checkers_work_offline_and_count_sentences_with_punkt():
    from ifprune.eval.ifeval import score_response

    row = {"prompt": "Answer without commas in exactly 2 sentences.",
           "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_sentences"],
           "kwargs": [{}, {"relation": "at least", "num_sentences": 2}]}
    good = score_response(row, "Dr. Smith went home. He was tired.")
    assert good["inst_strict"] == [True, True] and good["prompt_strict"] == 1.0
    bad = score_response(row, "Yes, indeed")
    assert bad["inst_strict"] == [False, False] and bad["prompt_loose"] == 0.0


def test_ifeval_checkers_that_tokenize_words_run_offline():
    # CapitalWordFrequencyChecker calls nltk.word_tokenize, which needs NLTK's punkt_tab model itself
    from ifprune.eval.ifeval import score_response

    row = {"prompt": "Use at most 2 words in all capital letters.",
           "instruction_id_list": ["change_case:capital_word_frequency"],
           "kwargs": [{"capital_relation": "less than", "capital_frequency": 3}]}
    assert score_response(row, "NASA and the ESA. Fine.")["inst_strict"] == [True]
    assert score_response(row, "ONE TWO THREE FOUR.")["inst_strict"] == [False]


def test_every_ifeval_instruction_in_the_data_set_can_be_checked(data_dir):
    from ifprune.eval.ifeval import score_response

    path = data_dir / "ifeval" / "input_data.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    first = {}
    for r in rows:
        for inst in r["instruction_id_list"]:
            first.setdefault(inst, r)
    assert len(first) >= 20
    for r in first.values():
        sc = score_response(r, "Sure. Here is my answer, in two sentences.\n\nIt ends HERE.")
        assert len(sc["inst_strict"]) == len(r["instruction_id_list"])


def test_bootstrap_interval_brackets_the_estimate_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, 200)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 0.2
    assert bootstrap_ci(x) == (lo, hi)
    s = summarise([2.0, 4.0], [1, 3])
    assert s["value"] == pytest.approx(1.5) and s["n"] == 2


def test_overlap_analysis_within_and_across_families(tmp_path):
    from ifprune.eval.plots import overlap_analysis, plot_heatmap, plot_overlap

    d, L, k = 40, 3, 10
    a = Plan([list(range(10))] * L, d)
    b = Plan([list(range(1, 11))] * L, d)
    c = Plan([list(range(30, 40))] * L, d)
    e = Plan([list(range(29, 39))] * L, d)
    res = overlap_analysis({"x": [a, b], "y": [c, e]})
    assert res["within_per_layer"] == pytest.approx([0.9] * L)
    assert res["across_per_layer"] == pytest.approx([0.0] * L)
    assert res["matrix"][0][0] == pytest.approx(0.9) and res["matrix"][0][1] == pytest.approx(0.0)
    for p in (plot_overlap(res, tmp_path / "o.png"), plot_heatmap(res, tmp_path / "h.png")):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_writes_json_markdown_and_plots(data_dir, tmp_path):
    from ifprune.eval.compare import CompareConfig, run_compare, write_report
    from ifprune.eval.plots import plot_metric_vs_params

    torch.set_num_threads(1)
    lm = tiny_lm("llama")
    cfg = CompareConfig(suites=["nll", "mc"], selectors=["dense", "random", "magnitude"], keeps=[0.5, 0.333],
                        limits={"nll": 3, "mc": 1}, data_dir=str(data_dir), mc_tasks=["arc_easy", "piqa"],
                        cache_dir=str(tmp_path / "cache"), command="test")
    report = run_compare(lm, cfg, progress=False)
    assert len(report["results"]) == 2 * 5  # dense once, two keeps for the others
    js, md = write_report(report, tmp_path / "out")
    assert json.loads(js.read_text())["results"][0]["metrics"]
    text = md.read_text()
    assert "| magnitude | 0.333 (16/48)" in text and "nll=3" in text and "95%" in text
    pngs = plot_metric_vs_params(report, tmp_path / "out")
    assert [p.name for p in pngs] == ["nll_vs_params.png", "mc_vs_params.png"]
    # the overlap plots of a per-prompt selector follow the run's limits (nll=3: 3 prompts per family)
    import dataclasses

    from ifprune.commands.eval import emit_plots

    paths = emit_plots(lm, report, dataclasses.replace(cfg, selectors=["griffin"], keeps=[0.5]), tmp_path / "out")
    analysis = json.loads((tmp_path / "out" / "overlap_griffin.json").read_text())
    assert set(analysis["prompts_per_family"].values()) == {3} and len(paths) == 4
