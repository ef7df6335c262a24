"""Every suite on a tiny random model with the real local data; bad input; caching and resume."""

import json

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.eval import Scorer, make_suite, run_suite
from ifprune.eval.cache import ResultCache
from ifprune.selection.selectors import make_selector
from ifprune.core.tiny import tiny_lm


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return tiny_lm("llama")


def _run(lm, suite, selector="dense", width=None, limit=2, cache=None, **kw):
    s = make_suite(suite, **kw)
    sc = Scorer(lm, make_selector(selector, seed=0), width or lm.d_ffn)
    return run_suite(s, sc, limit=limit, cache_dir=cache, progress=False)


@pytest.mark.parametrize("suite", ["nll", "gsm8k", "math500", "humaneval", "mbpp", "ifeval"])
def test_each_suite_runs_on_a_tiny_model(lm, data_dir, suite, tmp_path):
    res = _run(lm, suite, "griffin", 24, data_dir=data_dir, max_new_tokens=4, cache=tmp_path)
    assert res.examples == 2 and res.width == 24
    m = res.metrics[res.primary]
    assert m["n"] == 2 and m["ci95"][0] <= m["value"] <= m["ci95"][1]
    if suite == "nll":
        assert m["value"] > 0 and any(k.startswith("nll_per_token/") for k in res.metrics)
    else:
        assert 0 <= m["value"] <= 1
    assert res.active_params < res.total_params


def test_a_failing_example_is_a_clear_error_and_the_ones_before_it_stay_cached(lm, data_dir, tmp_path, monkeypatch):
    from ifprune.eval import ifeval

    calls = []
    real = ifeval.score_response

    def flaky(row, response):
        calls.append(row["prompt"])
        if len(calls) == 2:
            raise LookupError("checker data missing")
        return real(row, response)

    monkeypatch.setattr(ifeval, "score_response", flaky)
    with pytest.raises(IfpruneError, match=r"ifeval failed on example 'ifeval-\d+': LookupError: checker data missing; "
                                           r"the 1 examples before it are cached"):
        _run(lm, "ifeval", data_dir=data_dir, max_new_tokens=2, limit=3, cache=tmp_path)
    res = _run(lm, "ifeval", data_dir=data_dir, max_new_tokens=2, limit=3, cache=tmp_path)
    assert res.examples == 3 and res.cached == 1


def test_mc_limit_is_per_task_and_scores_every_task(lm, data_dir):
    res = _run(lm, "mc", "magnitude", 24, data_dir=data_dir, limit=2)
    assert res.examples == 14  # 7 tasks x 2
    for t in ("mmlu", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa"):
        assert res.metrics[f"acc/{t}"]["n"] == 2
    assert "acc_norm" in res.metrics


def test_nll_prefers_the_dense_model_on_average(lm, data_dir):
    """Pruning a random model to 1/6 of its channels changes its log-likelihoods."""
    dense = _run(lm, "nll", data_dir=data_dir, limit=4).metrics["nll_per_token"]["value"]
    pruned = _run(lm, "nll", "random", 8, data_dir=data_dir, limit=4).metrics["nll_per_token"]["value"]
    assert dense != pytest.approx(pruned)


def test_results_are_cached_and_a_run_resumes(lm, data_dir, tmp_path):
    first = _run(lm, "nll", "random", 24, data_dir=data_dir, limit=3, cache=tmp_path)
    assert first.cached == 0
    with open(first.cache_file, "a") as f:
        f.write('{"id": "torn')  # an interrupted write
    again = _run(lm, "nll", "random", 24, data_dir=data_dir, limit=5, cache=tmp_path)
    assert again.cached == 3 and again.examples == 5
    assert again.config_hash == first.config_hash
    other = _run(lm, "nll", "random", 16, data_dir=data_dir, limit=3, cache=tmp_path)
    assert other.config_hash != first.config_hash and other.cached == 0


def test_cache_ignores_a_torn_line(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "a", "num": 1}\n{"id": "b", "nu')
    c = ResultCache(p)
    assert c.get("a") == {"id": "a", "num": 1} and c.get("b") is None


def test_malformed_rows_are_skipped_with_a_count_or_fail_with_the_line(lm, tmp_path):
    data = tmp_path / "nll.jsonl"
    rows = [{"prompt": "Say hi", "response": "hi there", "family": "a"}, "not json", {"prompt": "x"},
            {"prompt": "Add 1+1", "response": "2", "family": "b"}]
    data.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    res = _run(lm, "nll", data=data, limit=None)
    assert res.examples == 2 and res.skipped_rows == 2
    assert set(res.metrics) == {"nll_per_token", "nll_per_token/a", "nll_per_token/b"}
    with pytest.raises(IfpruneError, match=r"nll.jsonl:2: malformed row"):
        _run(lm, "nll", data=data, strict=True)


def test_missing_data_file_names_the_path_and_the_fix(lm, tmp_path):
    with pytest.raises(IfpruneError, match=r"data file not found: .*gsm8k/test.jsonl.*--data-dir"):
        _run(lm, "gsm8k", data_dir=tmp_path)


def test_unknown_suite_and_bad_limit():
    with pytest.raises(IfpruneError, match="unknown suite 'nope'"):
        make_suite("nope")
    with pytest.raises(IfpruneError, match="unknown mc task"):
        make_suite("mc", tasks=["hellaswag"])


def test_cli_reports_bad_input_with_exit_2(tmp_path, capsys):
    from ifprune.cli import main

    assert main(["eval", "nope"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err
    assert main(["eval", "gsm8k", "--data-dir", str(tmp_path)]) == 2
    assert "data file not found" in capsys.readouterr().err
    assert main(["eval", "compare", "--suites", "nll", "--selectors", "dense", "--keeps", "0.5", "--out",
                 str(tmp_path), "--limits", "nll=zero"]) == 2
    assert "bad --limits entry" in capsys.readouterr().err


def test_per_prompt_plans_differ_and_static_plans_do_not(lm):
    g = Scorer(lm, make_selector("griffin"), 24)
    m = Scorer(lm, make_selector("magnitude"), 24)
    assert g.plan_for("Write a poem about the sea.") != g.plan_for("def add(a, b): return a + b")
    assert m.plan_for("Write a poem.") == m.plan_for("def f(): pass")
    assert Scorer(lm, make_selector("dense"), lm.d_ffn).plan_for("x") is None


def test_per_task_mode_uses_one_plan(lm):
    sc = Scorer(lm, make_selector("griffin"), 24, task="Solve grade-school math word problems.")
    assert sc.plan_for("What is 2+2?") == sc.plan_for("Write a haiku.")


def test_compact_scoring_matches_masked_scoring(lm):
    """The scorer runs the compact model; the masked full model must give the same log-likelihood."""
    from ifprune.core.hooks import MaskedFFN

    sc = Scorer(lm, make_selector("random", seed=1), 20)
    plan = sc.plan_for(None)
    pair = (sc.encode("Hello there", chat=False), sc.encode(" friend", chat=False))
    (lp, n, _), = sc.loglikelihoods(plan, [pair])
    masked = MaskedFFN(lm.layout)
    try:
        with masked.apply(plan.to_mask()), torch.no_grad():
            ids = torch.tensor([pair[0] + pair[1]])
            logp = torch.log_softmax(lm.model(ids).logits.float(), -1)[0]
        ref = sum(float(logp[len(pair[0]) + i - 1, t]) for i, t in enumerate(pair[1]))
    finally:
        masked.remove()
    assert lp == pytest.approx(ref, abs=1e-4) and n == len(pair[1])


def test_batched_loglikelihoods_equal_one_at_a_time(lm):
    sc = Scorer(lm, make_selector("dense"), lm.d_ffn)
    pairs = [(sc.encode("Q: a?\nA:", chat=False), sc.encode(" yes", chat=False)),
             (sc.encode("Q: longer question here?\nA:", chat=False), sc.encode(" no way", chat=False))]
    both = sc.loglikelihoods(None, pairs)
    single = [sc.loglikelihoods(None, [p])[0] for p in pairs]
    for (a, na, _), (b, nb, _) in zip(both, single):
        assert a == pytest.approx(b, abs=1e-4) and na == nb


def test_shared_context_one_token_choices_equal_the_general_path(lm):
    """MMLU's four letters after one context take a single forward; the numbers are the general path's."""
    sc = Scorer(lm, make_selector("random", seed=2), 20)
    plan = sc.plan_for(None)
    ctx = sc.encode("Question: which?\nA. x\nB. y\nAnswer:", chat=False)
    letters = [[t] for t in (11, 12, 13, 14)]  # one-token choices (the tiny tokenizer splits " A")
    fast = sc.loglikelihoods(plan, [(ctx, t) for t in letters])
    slow = [sc.loglikelihoods(plan, [(ctx, t), (ctx[:-1], ctx[-1:] + t)])[0] for t in letters]
    for (a, na, ga), (b, nb, gb) in zip(fast, slow):
        assert a == pytest.approx(b, abs=1e-4) and na == nb == 1 and ga == gb


@pytest.mark.integration
def test_cli_on_the_default_model(data_dir, tmp_path, capsys):
    from ifprune.cli import main

    assert main(["eval", "nll", "--limit", "2", "--selector", "griffin", "--keep", "0.5", "--data-dir", str(data_dir),
                 "--cache-dir", str(tmp_path), "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["suite"] == "nll" and out["width"] == 768 and 0 < out["metrics"]["nll_per_token"]["value"] < 10
    assert main(["eval", "humaneval", "--limit", "1", "--max-new-tokens", "48", "--data-dir", str(data_dir),
                 "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    assert "pass@1" in capsys.readouterr().out


def test_paired_difference_matches_examples_by_id_and_says_when_rows_are_not_separated():
    from ifprune.eval.statistics import paired

    a = [{"id": str(i), "num": 1.0 + 0.1 * (i % 7), "den": 2} for i in range(60)]
    same = paired(a, list(reversed(a)))  # (order does not matter: matched by id)
    assert same["n"] == 60 and same["b_minus_a"] == 0 and not same["separated"]
    worse = paired(a, [{**r, "num": r["num"] + 0.2 + 0.01 * (int(r["id"]) % 3)} for r in a])
    assert worse["b_minus_a"] == pytest.approx(0.1, abs=0.01) and worse["separated"] and worse["ci95"][0] > 0
    assert paired(a, [{**a[0], "den": 3}]) is None  # other tokens: not paired
    assert paired(a, [{**a[0], "den": 3}, a[1]])["unpaired"] == 1
    assert paired(a, [{"id": "x", "num": 0, "den": 1}]) is None


def test_eval_names_the_model_and_weights_and_warns_when_n_is_small(tmp_path, data_dir, capsys):
    from ifprune.cli import main
    from ifprune.core.tiny import tiny_model, tiny_tokenizer

    model = tmp_path / "m"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    assert main(["eval", "nll", "--model", str(model), "--limit", "2", "--selector", "griffin", "--keep", "0.5",
                 "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"model {model}, base weights\n") and "nll: griffin keep 0.500" in out
    assert "note: 2 examples" in err and "ifprune compare" in err
