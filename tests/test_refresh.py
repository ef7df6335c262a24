"""Re-selection after R answer tokens (selection.refresh): generation, scoring and their parity with the
masked full model, on a tiny random model."""

import io

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.hooks import MaskedFFN
from ifprune.core.plan import Plan
from ifprune.core.prompting import encode_prompt
from ifprune.core.tiny import tiny_lm
from ifprune.eval.scorer import Scorer
from ifprune.runtime.generation import SamplingConfig, generate
from ifprune.selection.heads import standardise
from ifprune.selection.refresh import (Reselection, check_refresh, from_mode, refresh_plan, refresh_scores,
                                       resolve_reselection)
from ifprune.selection.selectors import GriffinSelector, make_selector

R = 4


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", layers=3)


def masked_greedy(lm, ids, plan, n):
    with torch.no_grad(), MaskedFFN(lm.layout).apply(plan.to_mask()):
        return lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)


def test_refresh_scores_add_the_selectors_and_griffins_standardised_scores(lm):
    sel = make_selector("wanda")
    ids = encode_prompt(lm.tokenizer, "count to ten")[0]
    want = standardise(sel.scores(lm, None)) + standardise(GriffinSelector.scores_from_ids(lm, ids.unsqueeze(0)))
    torch.testing.assert_close(refresh_scores(lm, sel, "count to ten", ids), want)
    plan = refresh_plan(lm, sel, "count to ten", ids, 20, R)
    assert plan.meta["refresh"] == {"after": R, "tokens": ids.numel()} and plan.width == 20


def test_generation_re_selects_after_r_tokens_as_the_masked_model_would(lm):
    s = SamplingConfig(max_new_tokens=10, ignore_eos=True)
    res = generate(lm, "count to ten", selector="griffin", width=16, sampling=s, refresh=R)
    plain = generate(lm, "count to ten", selector="griffin", width=16, sampling=s)
    assert res.refresh["after"] == R and res.new_tokens == 10 and res.timings["refresh_s"] >= 0
    assert res.plan_hash == plain.plan_hash  # the first plan is the plain one
    # by hand: R tokens under the first plan, then a fresh prefill of everything so far under the second
    ids = encode_prompt(lm.tokenizer, "count to ten")
    head = masked_greedy(lm, ids, res.plan, R)
    plan2 = refresh_plan(lm, make_selector("griffin"), "count to ten", head[0], 16, R)
    assert plan2.hash == res.refresh["plan_hash"] != res.plan_hash
    full = masked_greedy(lm, head, plan2, 10 - R)
    assert lm.tokenizer.decode(full[0, ids.shape[1]:], skip_special_tokens=True) == res.text
    assert "re-selected after 4 tok" in res.summary()
    again = generate(lm, "count to ten", selector="griffin", width=16, sampling=s, refresh=R)
    assert again.text == res.text  # deterministic


def test_streaming_with_refresh_writes_the_whole_answer_once(lm):
    buf = io.StringIO()
    res = generate(lm, "hi", selector="griffin", width=16, sampling=SamplingConfig(max_new_tokens=9, ignore_eos=True),
                   stream=buf, refresh=R)
    assert res.refresh is not None
    assert buf.getvalue() == res.text + "\n"


def test_no_refresh_when_the_answer_is_short_or_the_model_dense(lm):
    s = SamplingConfig(max_new_tokens=R, ignore_eos=True)
    assert generate(lm, "hi", selector="griffin", width=16, sampling=s, refresh=R).refresh is None
    assert generate(lm, "hi", sampling=SamplingConfig(max_new_tokens=8), refresh=R).refresh is None


def test_scoring_with_refresh_is_the_two_segments_scored_as_generation_runs_them(lm):
    sel = make_selector("griffin")
    sc = Scorer(lm, sel, 16, refresh=R)
    plain = Scorer(lm, sel, 16)
    prompt = "count to ten"
    ctx = sc.encode(prompt, chat=True)
    cont = list(range(10, 20))
    plan = sc.plan_for(prompt)
    (lp, n, _), = sc.loglikelihoods(plan, [(ctx, cont)])
    assert n == len(cont)
    (h, _, _), = plain.loglikelihoods(plan, [(ctx, cont[:R])])
    plan2 = refresh_plan(lm, sel, prompt, torch.tensor(ctx + cont[:R]), 16, R)
    (t, _, _), = plain.loglikelihoods(plan2, [(ctx + cont[:R], cont[R:])])
    assert lp == pytest.approx(h + t, abs=1e-4)
    # masked full model: the same two sums
    def masked_sum(plan, context, c):
        ids = torch.tensor([context + c])
        with torch.no_grad(), MaskedFFN(lm.layout).apply(plan.to_mask()):
            logp = torch.log_softmax(lm.model(ids[:, :-1]).logits.float(), -1)[0]
        return float(logp[len(context) - 1:].gather(1, torch.tensor(c).unsqueeze(1)).sum())
    assert lp == pytest.approx(masked_sum(plan, ctx, cont[:R]) + masked_sum(plan2, ctx + cont[:R], cont[R:]), abs=1e-3)
    (short, _, _), = sc.loglikelihoods(plan, [(ctx, cont[:R])])  # nothing after R: no refresh
    assert short == pytest.approx(h, abs=1e-5)
    assert sc.config()["refresh"] == R and "refresh" not in plain.config()


def test_scoring_with_refresh_every_r_tokens_is_one_segment_per_plan(lm):
    sel = make_selector("griffin")
    every = Scorer(lm, sel, 16, refresh=R, refresh_every=True, prefill="pruned")
    plain = Scorer(lm, sel, 16)
    prompt = "count to ten"
    ctx = every.encode(prompt, chat=True)
    cont = list(range(10, 20))  # segments [0, R), [R, 2R), [2R, 10), each under the plan re-selected before it
    plan = every.plan_for(prompt)
    (lp, n, _), = every.loglikelihoods(plan, [(ctx, cont)])
    want, cuts = 0.0, [0, R, 2 * R, len(cont)]
    for a, b in zip(cuts, cuts[1:]):
        seg = plan if a == 0 else refresh_plan(lm, sel, prompt, torch.tensor(ctx + cont[:a]), 16, R)
        (s, _, _), = plain.loglikelihoods(seg, [(ctx + cont[:a], cont[a:b])])
        want += s
    assert n == len(cont) and lp == pytest.approx(want, abs=1e-4)
    once = Scorer(lm, sel, 16, refresh=R)
    once.plan_for(prompt)
    (two, _, _), = once.loglikelihoods(plan, [(ctx, cont[:2 * R])])  # up to 2R tokens: one re-selection either way
    (two_every, _, _), = every.loglikelihoods(plan, [(ctx, cont[:2 * R])])
    assert two == pytest.approx(two_every, abs=1e-6)
    assert every.config()["refresh_every"] is True and "refresh_every" not in once.config()


@pytest.mark.parametrize("prefill", ["pruned", "dense", "dense-answer"])
def test_generation_with_refresh_every_matches_between_scorer_and_generate(lm, prefill):
    sel = make_selector("griffin")
    sc = Scorer(lm, sel, 16, refresh=R, refresh_every=True, prefill=prefill)
    prompt = "count to ten"
    plan = sc.plan_for(prompt)
    text = sc.generate(plan, sc.encode(prompt, chat=True), max_new_tokens=3 * R + 2)
    res = generate(lm, prompt, selector=sel, width=16, refresh=R, refresh_every=True, prefill=prefill,
                   sampling=SamplingConfig(max_new_tokens=3 * R + 2, ignore_eos=True))
    assert res.refresh["count"] == 3 and res.refresh["every"] and res.prefill == prefill
    assert text == res.text
    # greedy decoding of the masked full model, each segment under its own plan re-selected from the prompt and
    # the answer so far (dense prefill: every channel on for the prompt but its last token; dense-answer: for
    # everything before the segment but its last token)
    seq = encode_prompt(lm.tokenizer, prompt)
    n = seq.shape[1]
    for k in range(4):
        first_masked = {"pruned": 0, "dense": n - 1, "dense-answer": seq.shape[1] - 1}[prefill]
        seg = plan if k == 0 else refresh_plan(lm, sel, prompt, seq[0], 16, R)
        mask = seg.to_mask()
        hooks = [layer.down.register_forward_pre_hook(
            lambda m, a, i=layer.index: (torch.cat([a[0][:, :first_masked], a[0][:, first_masked:] * mask[i]], 1),))
            for layer in lm.layout.layers]
        try:
            for _ in range(min(R, 3 * R + 2 - (seq.shape[1] - n))):
                with torch.no_grad():
                    seq = torch.cat([seq, lm.model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
        finally:
            for h in hooks:
                h.remove()
    assert lm.tokenizer.decode(seq[0, n:], skip_special_tokens=True) == res.text
    # scoring runs the same segments: every token of the greedy answer is the argmax where it was made
    (_, count, greedy), = sc.loglikelihoods(plan, [(seq[0, :n].tolist(), seq[0, n:].tolist())])
    assert count == 3 * R + 2 and greedy


def test_refresh_every_without_re_selection_is_refused(lm):
    with pytest.raises(IfpruneError, match="refresh_every re-selects after every R"):
        generate(lm, "hi", selector="griffin", width=16, refresh_every=True)
    with pytest.raises(IfpruneError, match="prefill must be one of"):
        generate(lm, "hi", selector="griffin", width=16, prefill="half")


def test_reselection_defaults_follow_the_artifact_and_what_is_given():
    from types import SimpleNamespace

    trained = SimpleNamespace(artifact=SimpleNamespace(refresh=32))  # recipe `refresh: 32`, as the shipped ones
    plain = SimpleNamespace()  # a training-free selector: no default re-selection
    assert resolve_reselection(None, None, None, trained) == Reselection(32, True, "dense-answer")
    assert resolve_reselection(16, None, None, trained) == Reselection(16, False, "pruned")  # R given alone: once
    assert resolve_reselection(None, False, None, trained) == Reselection(32, False, "pruned")
    assert resolve_reselection(0, None, "dense", trained) == Reselection(None, False, "dense")
    assert resolve_reselection(None, None, None, plain) == Reselection(None, False, "pruned") == Reselection.off()
    assert resolve_reselection(8, True, "pruned", plain) == Reselection(8, True, "pruned")
    with pytest.raises(IfpruneError, match="refresh_every re-selects after every R"):
        resolve_reselection(None, True, None, plain)
    with pytest.raises(IfpruneError, match="prefill must be one of"):
        resolve_reselection(None, None, "half", trained)


def test_scorer_generation_with_refresh_matches_generate(lm):
    sel = make_selector("griffin")
    sc = Scorer(lm, sel, 16, refresh=R)
    prompt = "count to ten"
    plan = sc.plan_for(prompt)
    text = sc.generate(plan, sc.encode(prompt, chat=True), max_new_tokens=10)
    res = generate(lm, prompt, selector=sel, width=16, sampling=SamplingConfig(max_new_tokens=10), refresh=R)
    assert text == res.text


def test_bad_refresh_values_and_a_fixed_plan_are_refused(lm):
    for bad in (-1, 2.5, True):
        with pytest.raises(IfpruneError, match="refresh must be a whole number"):
            check_refresh(bad)
    assert check_refresh(0) is None and check_refresh(None) is None and check_refresh(8) == 8
    plan = Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn), 16)
    with pytest.raises(IfpruneError, match="cannot follow a fixed plan"):
        generate(lm, "hi", plan=plan, refresh=R)


def test_compare_specs_take_reselection_in_the_one_spelling_and_the_old_one_warns():
    from ifprune.eval.compare import SelectorSpec

    s = SelectorSpec.parse("griffin+reselect-once32")
    assert (s.name, s.refresh, s.refresh_every, s.label()) == ("griffin", 32, False, "griffin+reselect-once32")
    e = SelectorSpec.parse("griffin+reselect-every")  # no N: as --reselect every alone, 32 without an artifact's own
    assert (e.refresh, e.refresh_every, e.label()) == (32, True, "griffin+reselect-every32+dense-answer-prefill")
    assert SelectorSpec.parse("griffin+reselect-off").refresh == 0
    with pytest.warns(FutureWarning, match="earlier spelling"):
        old = SelectorSpec.parse("griffin+refresh32")
    assert (old.refresh, old.refresh_every, old.label()) == (32, False, "griffin+reselect-once32")
    for bad, match in (("griffin+refresh", "needs a token count"), ("dense+refresh8", "nothing to re-select"),
                       ("dense+reselect-every8", "nothing to re-select"), ("griffin+reselect-every0", ">= 1"),
                       ("griffin+reselect-off8", "takes no token count")):
        with pytest.raises(IfpruneError, match=match):
            SelectorSpec.parse(bad)


def test_cli_refuses_refresh_with_a_plan_file(tmp_path, capsys):
    from ifprune.cli import main

    p = tmp_path / "p.json"
    Plan.from_scores(torch.rand(2, 8), 4).save(p)
    assert main(["generate", "hi", "--plan", str(p), "--refresh", "8"]) == 2
    assert "--refresh would be ignored" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_under_refresh(tmp_path_factory):
    """A tiny predictor artifact whose recipe says it was trained under re-selection after R tokens, and
    a fresh model of its base (attaching an artifact changes the model it is attached to)."""
    from ifprune.selection.artifact import save_artifact
    from ifprune.selection.heads import PredictorHead

    base = tiny_lm("llama", layers=3)
    torch.manual_seed(0)
    head = PredictorHead(base.model.config.hidden_size, base.num_layers, base.d_ffn, 8)
    path = tmp_path_factory.mktemp("art") / "refresh"
    save_artifact(path, lm=base, kind="predictor", width=16, module=head, llm="none", recipe={"refresh": R},
                  base_fingerprint=base.fingerprint())
    return path, base


def test_an_artifact_trained_under_refresh_runs_with_it_unless_told_0(trained_under_refresh):
    """Its default: re-selection after every R tokens with a dense prefill; `refresh R` given alone: once, pruned
    prefill (what it meant before that default); `refresh 0`: one plan."""
    from ifprune.selection.artifact import load_artifact

    path, lm = trained_under_refresh
    assert load_artifact(path).refresh == R
    sel = make_selector("predictor", checkpoint=str(path))
    s = SamplingConfig(max_new_tokens=10, ignore_eos=True)
    res = generate(lm, "count to ten", selector=sel, width=16, sampling=s)
    assert res.refresh["after"] == R and res.refresh_after == R
    assert res.refresh_every and res.refresh["count"] == 2 and res.prefill == "dense-answer"
    told = generate(lm, "count to ten", selector=sel, width=16, sampling=s, refresh=R, refresh_every=True,
                    prefill="dense-answer")
    assert told.text == res.text and told.refresh == res.refresh
    sc = Scorer(lm, sel, 16)  # its generation copies the re-selection pass's cache (the predictor keeps it)
    assert sc.generate(sc.plan_for("count to ten"), sc.encode("count to ten", chat=True), max_new_tokens=10) == res.text
    short = generate(lm, "count to ten", selector=sel, width=16, sampling=SamplingConfig(max_new_tokens=R, ignore_eos=True))
    assert short.refresh is None and f"re-selection (every {R} tok) not reached" in short.summary()
    once = generate(lm, "count to ten", selector=sel, width=16, sampling=s, refresh=R)
    assert once.refresh["count"] == 1 and not once.refresh_every and once.prefill == "pruned"
    off = generate(lm, "count to ten", selector=sel, width=16, sampling=s, refresh=0)
    assert off.refresh is None and off.refresh_after is None and off.plan_hash == res.plan_hash
    assert off.prefill == "pruned"
    own = Scorer(lm, sel, 16)
    assert (own.refresh, own.refresh_every, own.prefill) == (R, True, "dense-answer")
    assert own.config()["refresh"] == R and own.config()["refresh_every"] and own.config()["prefill"] == "dense-answer"
    # rows measured before this default keep their cache keys: `refresh R` alone and `refresh 0`
    assert Scorer(lm, sel, 16, refresh=R).config().keys() == Scorer(lm, make_selector("griffin"), 16, refresh=R).config().keys()
    assert Scorer(lm, sel, 16, refresh=0).refresh is None and "refresh" not in Scorer(lm, sel, 16, refresh=0).config()
    assert "prefill" not in Scorer(lm, sel, 16, refresh=0).config()
    assert Scorer(lm, make_selector("griffin"), 16).refresh is None  # training-free selectors: off by default


def test_compare_rows_of_an_artifact_trained_under_refresh(trained_under_refresh):
    from ifprune.eval.compare import SelectorSpec

    path, _ = trained_under_refresh
    own, off, other = (SelectorSpec.parse(f"{n}:{path}") for n in ("predictor", "predictor+refresh0", "predictor+refresh8"))
    assert (own.refresh, own.effective_refresh(), own.label()) == (None, R, f"ifpruning+reselect-every{R}+dense-answer-prefill")
    assert SelectorSpec.parse(f"predictor+dense-answer-prefill:{path}").prefill == "dense-answer"
    assert (off.refresh, off.effective_refresh(), off.label()) == (0, None, "ifpruning")
    assert (other.effective_refresh(), other.label()) == (8, "ifpruning+reselect-once8")
    once = SelectorSpec.parse(f"predictor+refresh-once:{path}")
    assert once.label() == f"ifpruning+reselect-once{R}" and once.effective_refresh() == R and once.refresh_every is False
    assert SelectorSpec.parse(f"predictor+reselect-once:{path}").label() == f"ifpruning+reselect-once{R}"
    assert SelectorSpec.parse("griffin+refresh-once").label() == "griffin"  # no R of its own: nothing to re-select
    pruned = SelectorSpec.parse(f"predictor+pruned-prefill:{path}")
    assert pruned.label() == f"ifpruning+reselect-every{R}" and pruned.prefill == "pruned"
    assert SelectorSpec.parse(f"predictor+refresh{R}+dense-prefill:{path}").label() == f"ifpruning+reselect-once{R}+dense-prefill"


def test_a_recipe_refresh_that_makes_no_sense_is_refused(trained_under_refresh, tmp_path):
    import json
    import shutil

    from ifprune.selection.artifact import load_artifact, seal_config

    src, _ = trained_under_refresh
    for value in (-1, "32", True):
        shutil.rmtree(tmp_path / "a", ignore_errors=True)
        shutil.copytree(src, tmp_path / "a")
        cfg = json.loads((tmp_path / "a" / "config.json").read_text())
        cfg.pop("config_sha256")
        cfg["recipe"]["refresh"] = value
        seal_config(tmp_path / "a", cfg)
        with pytest.raises(IfpruneError, match="recipe refresh must be a whole number"):
            load_artifact(tmp_path / "a")


def test_a_refresh_reuses_the_first_selections_scores(lm):
    """Re-selection needs the selector's scores of the prompt again: they come from the first selection,
    not a second prompt pass."""
    sel = make_selector("griffin")
    calls = []
    inner = sel.scores
    sel.scores = lambda lm_, text: calls.append(text) or inner(lm_, text)
    res = generate(lm, "count to ten", selector=sel, width=16, sampling=SamplingConfig(max_new_tokens=10,
                                                                                         ignore_eos=True), refresh=R)
    assert res.refresh is not None and calls == ["count to ten"]
    fresh = make_selector("griffin")
    ids = encode_prompt(lm.tokenizer, "count to ten")[0]
    torch.testing.assert_close(refresh_scores(lm, sel, "count to ten", ids), refresh_scores(lm, fresh, "count to ten", ids))
    for i in range(sel.RECENT + 1):  # bounded: old prompts' scores are dropped
        sel.select(lm, f"prompt {i}", 16)
    assert len(sel._recent) == sel.RECENT


def test_re_selection_after_the_predictors_pass_runs_only_the_new_tokens(trained_under_refresh):
    """An artifact that re-selects keeps its prompt pass's GRIFFIN sums and KV cache: the re-selected
    scores then come from a pass over the answer tokens alone, equal to a pass over everything, and the
    predictor's own scores are those of its plain pass."""
    from ifprune.selection.predictor import head_scores
    from ifprune.selection.refresh import seen_scores

    path, lm = trained_under_refresh
    sel = make_selector("predictor", checkpoint=str(path))
    own = sel.scores(lm, "count to ten")
    ids, _ = __import__("ifprune.core.prompting", fromlist=["encode_batch"]).encode_batch(lm.tokenizer, ["count to ten"])
    torch.testing.assert_close(own, head_scores(sel.artifact.head, lm.model, ids)[0])
    state = sel.prompt_state(lm, "count to ten")
    assert state is not None and sel.prompt_state(lm, "other text") is None
    full = torch.cat([state.ids, torch.tensor([7, 8, 9, 10, 11])])
    for _ in range(2):  # the cache is cropped back after each use
        torch.testing.assert_close(seen_scores(lm, full, state), GriffinSelector.scores_from_ids(lm, full.unsqueeze(0)),
                                   atol=1e-5, rtol=1e-4)
    other = torch.tensor([5, 6, 7, 8, 9, 10, 11, 12])  # not this prompt: a pass over everything
    torch.testing.assert_close(seen_scores(lm, other, state), GriffinSelector.scores_from_ids(lm, other.unsqueeze(0)))
    s = SamplingConfig(max_new_tokens=10, ignore_eos=True)
    res = generate(lm, "count to ten", selector=sel, width=16, sampling=s)
    plan2 = refresh_plan(lm, make_selector("predictor", checkpoint=str(path)), "count to ten",
                         torch.tensor(encode_prompt(lm.tokenizer, "count to ten")[0].tolist()
                                      + lm.tokenizer(res.text, add_special_tokens=False)["input_ids"][:R]), 16, R)
    assert res.refresh is not None and len(plan2.hash) == len(res.refresh["plan_hash"])


def test_dense_prefill_reuses_the_predictors_own_prompt_pass(trained_under_refresh):
    """The artifact's prompt pass already holds the full model's KV cache of the prompt: a dense prefill takes a
    copy of it (without the last token) instead of another pass, and leaves the selector's own cache whole."""
    from ifprune.selection.prefill import dense_prefix_cache, prompt_cache

    path, lm = trained_under_refresh
    sel = make_selector("predictor", checkpoint=str(path))
    sel.select(lm, "count to ten", 16)
    state = sel.prompt_state(lm, "count to ten")
    ids = encode_prompt(lm.tokenizer, "count to ten")
    assert torch.equal(state.ids, ids[0])  # the pass read what generation runs: it can be reused
    reused, fresh = prompt_cache(lm, sel, "count to ten", ids), dense_prefix_cache(lm, ids[:, :-1])
    assert reused.get_seq_length() == fresh.get_seq_length() == ids.shape[1] - 1
    assert state.cache.get_seq_length() == ids.shape[1]
    for a, b in zip(reused.layers, fresh.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=1e-4)
    s = SamplingConfig(max_new_tokens=3 * R, ignore_eos=True)
    res = generate(lm, "count to ten", selector=sel, width=16, sampling=s, prefill="dense", refresh_every=True)
    assert res.prefill == "dense" and res.refresh["count"] == 2 and res.refresh_every
    # the selector's own cache is the prompt's, whole, then the answer the last re-selection read (2R tokens): the
    # second re-selection continued the first's pass instead of reading the answer again
    assert torch.equal(state.ids, ids[0]) and state.answer.numel() == 2 * R
    assert state.cache.get_seq_length() == ids.shape[1] + 2 * R


def test_a_re_selection_continues_the_last_ones_pass(trained_under_refresh):
    """Re-selecting over a longer answer reads only the tokens after the answer the last one read, and gives the
    scores of one pass over the whole prompt + answer; a different answer starts over from the prompt."""
    from ifprune.selection.refresh import seen_scores

    path, lm = trained_under_refresh
    sel = make_selector("predictor", checkpoint=str(path))
    sel.select(lm, "count to ten", 16)
    state = sel.prompt_state(lm, "count to ten")
    prompt = state.ids
    a = torch.cat([prompt, torch.tensor([5, 6, 7, 8])])
    b = torch.cat([a, torch.tensor([9, 10, 11])])
    c = torch.cat([prompt, torch.tensor([12, 13])])
    for ids, read in ((a, 4), (b, 7), (c, 2)):
        got = seen_scores(lm, ids, state)
        torch.testing.assert_close(got, GriffinSelector.scores_from_ids(lm, ids.unsqueeze(0)), atol=1e-5, rtol=1e-4)
        assert state.answer.numel() == read and state.cache.get_seq_length() == prompt.numel() + read


def test_a_re_selecting_predictor_reads_the_whole_prompt(trained_under_refresh, monkeypatch):
    """Its prompt pass is also the dense prefill's and re-selection's: past the window other predictors read, it
    reads the whole prompt, so the dense prefill copies it instead of a second pass over the prompt."""
    from ifprune.selection.predictor import PredictorSelector
    from ifprune.selection.prefill import own_prompt_state

    path, lm = trained_under_refresh
    monkeypatch.setattr(PredictorSelector, "WINDOW", 8)
    text = "count to ten, then count back down to one, slowly"
    ids = encode_prompt(lm.tokenizer, text)
    assert ids.shape[1] > 8
    sel = make_selector("predictor", checkpoint=str(path))
    sel.select(lm, text, 16)
    assert sel.keeps_prompt_state and own_prompt_state(lm, sel, text, ids) is not None
    assert torch.equal(sel.prompt_state(lm, text).ids, ids[0])


def test_kept_prefill_is_the_masked_model_reading_each_token_once_under_its_segments_plan(lm):
    """"kept": the full model's cache of the prompt but its last token, then every token read once by the masked
    model of its segment's plan (its cache kept), each plan re-selected from GRIFFIN's squares over the prompt
    (full model) and over the answer tokens read so far (the unmasked FFN activations at the masked model's
    inputs)."""
    from transformers import DynamicCache

    from ifprune.core.hooks import record_intermediates
    from ifprune.selection.refresh import combine
    from ifprune.selection.selectors import griffin_squares

    sel, prompt, N = make_selector("griffin"), "count to ten", 3 * R + 2
    res = generate(lm, prompt, selector=sel, width=16, refresh=R, refresh_every=True, prefill="kept",
                   sampling=SamplingConfig(max_new_tokens=N, ignore_eos=True))
    assert res.prefill == "kept" and res.refresh["count"] == 3
    seq = encode_prompt(lm.tokenizer, prompt)
    squares = torch.zeros(lm.num_layers, lm.d_ffn)
    with torch.no_grad(), record_intermediates(lm.layout, lambda i, x: squares.__setitem__(i, griffin_squares(x)[0])):
        lm.model(seq)
    cache = DynamicCache(config=lm.model.config)
    with torch.no_grad():
        lm.model(seq[:, :-1], past_key_values=cache, use_cache=True)
    state = {"mask": res.plan.to_mask(), "record": False, "seen": torch.zeros_like(squares)}

    def hook(i):
        def pre(m, a):
            if state["record"]:
                state["seen"][i] += griffin_squares(a[0])[0]
            return (a[0] * state["mask"][i],)
        return pre

    hooks = [layer.down.register_forward_pre_hook(hook(layer.index)) for layer in lm.layout.layers]
    tok, answer = seq[:, -1:], []
    try:
        for t in range(N):
            if t and t % R == 0:
                own = sel.cached_scores(lm, prompt)
                plan = Plan.from_scores(combine(own, (squares + state["seen"]).sqrt()), 16)
                state["mask"] = plan.to_mask()
            state["record"] = t > 0  # the prompt's last token is the prompt's
            with torch.no_grad():
                tok = lm.model(tok, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
            answer.append(int(tok))
    finally:
        for h in hooks:
            h.remove()
    assert lm.tokenizer.decode(answer, skip_special_tokens=True) == res.text
    assert torch.equal(plan.indices, res.refresh_plan.indices)
    # scoring and the scorer's generation run the same: the greedy answer is the argmax wherever it was made
    sc = Scorer(lm, sel, 16, refresh=R, refresh_every=True, prefill="kept")
    first = sc.plan_for(prompt)
    assert first.hash == res.plan_hash
    assert sc.generate(first, sc.encode(prompt, chat=True), max_new_tokens=N) == res.text
    (lp, count, greedy), = sc.loglikelihoods(first, [(seq[0].tolist(), answer)])
    assert count == N and greedy and lp < 0


def test_kept_prefill_is_refused_by_the_llamacpp_runtime(lm):
    from ifprune.runtime.generation import RuntimeConfig

    with pytest.raises(IfpruneError, match="prefill kept .* --prefill dense-answer"):
        generate(lm, "hi", selector="griffin", width=16, refresh=R, refresh_every=True, prefill="kept",
                 runtime=RuntimeConfig("llamacpp"))


def test_kept_prefill_is_refused_where_it_is_not_run():
    from ifprune.bench.latency import BenchConfig
    from ifprune.serve.app import ServeConfig

    with pytest.raises(IfpruneError, match="prefill kept .*server's batched decode"):
        ServeConfig(prefill="kept").validate()
    with pytest.raises(IfpruneError, match="prefill kept .*bench's static-cache decoder"):
        BenchConfig(prefill="kept").validate()


def test_reselect_flags_have_independent_defaults_and_the_old_ones_warn(capsys):
    """--reselect off|once|every and --reselect-tokens N: the mode defaults to the selector's own, the tokens to the
    artifact's own or 32; --refresh / --refresh-every keep their meaning for a release, with a warning."""
    import argparse
    from types import SimpleNamespace

    from ifprune.commands.common import add_reselection_args, reselection_args

    p = argparse.ArgumentParser()
    add_reselection_args(p, "")
    trained = SimpleNamespace(artifact=SimpleNamespace(refresh=32))
    plain = make_selector("griffin")
    parse = lambda *a: p.parse_args(list(a))  # noqa: E731
    both = lambda *a, sel=trained: from_mode(*reselection_args(parse(*a), sel), sel)  # noqa: E731
    assert reselection_args(parse(), trained) == (None, None)  # nothing given: the library's default (every 32)
    assert reselection_args(parse("--reselect", "once"), trained) == ("once", None)  # passed on as the library takes it
    assert both("--reselect-tokens", "16") == (16, True)  # the mode stays the artifact's
    assert both("--reselect", "once") == (32, False)
    assert both("--reselect", "off") == (0, None)
    assert both("--reselect", "every", sel=plain) == (32, True)
    assert both("--reselect", "once", "--reselect-tokens", "8", sel=plain) == (8, False)
    capsys.readouterr()
    assert reselection_args(parse("--refresh", "16"), trained) == ("once", 16)  # the old meaning: once
    assert "--refresh / --refresh-every are deprecated" in capsys.readouterr().err
    assert reselection_args(parse("--refresh-every"), trained) == ("every", 32)
    assert reselection_args(parse("--refresh", "0"), trained) == ("off", None)
    for bad, match in ((("--reselect-tokens", "8"), "needs re-selection on"),
                       (("--reselect", "every", "--reselect-tokens", "0"), "must be a whole number >= 1"),
                       (("--reselect", "once", "--refresh", "8"), "give only --reselect")):
        with pytest.raises(IfpruneError, match=match):
            reselection_args(parse(*bad), plain)
    r = resolve_reselection(*both("--reselect", "once"), None, trained)
    assert r == Reselection(32, False, "pruned")


def test_generation_reports_reselection_in_one_shape(lm):
    s = SamplingConfig(max_new_tokens=3 * R, ignore_eos=True)
    res = generate(lm, "count to ten", selector="griffin", width=16, sampling=s, refresh=R, refresh_every=True)
    assert res.to_dict()["reselection"] == {"mode": "every", "tokens": R, "count": 2, "prefill": "dense-answer",
                                            "plan_hash": res.refresh_plan.hash}
    off = generate(lm, "count to ten", selector="griffin", width=16, sampling=s)
    assert off.to_dict()["reselection"] == {"mode": "off", "tokens": None, "count": 0, "prefill": "pruned"}


def test_the_library_takes_the_cli_spelling_and_warns_on_the_old_one():
    """generate, Scorer and ServeConfig take reselect / reselect_tokens with the CLI's meaning and defaults;
    refresh / refresh_every still work for one release with a FutureWarning; mixing them is refused."""
    from ifprune.serve import IfpruneServer, ServeConfig

    lm = tiny_lm("llama", d_ffn=48)
    sel = make_selector("griffin")
    s = SamplingConfig(max_new_tokens=8)
    new = generate(lm, "count to ten", selector=sel, width=24, sampling=s, reselect="every", reselect_tokens=3)
    with pytest.warns(FutureWarning, match="refresh/refresh_every are deprecated"):
        old = generate(lm, "count to ten", selector=sel, width=24, sampling=s, refresh=3, refresh_every=True)
    assert new.text == old.text and new.to_dict()["reselection"] == old.to_dict()["reselection"]
    assert new.to_dict()["reselection"]["mode"] == "every" and new.to_dict()["reselection"]["tokens"] == 3
    with pytest.raises(IfpruneError, match="give only reselect and reselect_tokens"):
        generate(lm, "hi", selector=sel, width=24, sampling=s, reselect="once", refresh=3)
    with pytest.raises(IfpruneError, match="reselect must be one of off, once, every"):
        generate(lm, "hi", selector=sel, width=24, sampling=s, reselect="sometimes")
    sc = Scorer(lm, sel, 24, reselect="once", reselect_tokens=5)
    assert (sc.refresh, sc.refresh_every) == (5, False)
    srv = IfpruneServer(lm, sel, ServeConfig(port=0, width=24, reselect="every", reselect_tokens=4))
    try:
        assert (srv.engine.refresh, srv.engine.every, srv.engine.prefill) == (4, True, "dense-answer")
    finally:
        srv.close()


def test_eval_results_report_reselection_in_the_one_shape(lm):
    from ifprune.eval.scorer import Scorer

    sel = make_selector("griffin")
    every = Scorer(lm, sel, 16, reselect="every", reselect_tokens=R).described()
    assert every["reselection"] == {"mode": "every", "tokens": R, "prefill": "dense-answer"}
    assert not {"refresh", "refresh_every", "prefill"} & set(every)
    assert Scorer(lm, sel, lm.d_ffn).described()["reselection"] == {"mode": "off", "tokens": None, "prefill": "pruned"}


@pytest.mark.parametrize("quant", [None, "int8"])
def test_kept_squares_take_the_kept_channels_from_the_compact_model_and_compute_only_the_others(quant):
    """What the compact model fed its down projection is the kept channels' share of the full FFN's activations:
    with it, only the dropped channels run through gate and up, and the squares are those of the full FFN (in
    whatever slot order a re-selected plan's in-place load left the buffers)."""
    from ifprune.runtime.lean import LeanDecoder
    from ifprune.selection.decoded import AnswerInputs, full_squares, kept_squares

    lm = tiny_lm("llama", layers=3, seed=1)
    lm.set_quant(quant)
    g = torch.Generator().manual_seed(0)
    plans = [Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), 24) for _ in range(2)]
    compact = lm.compact(24)
    compact.load(plans[0])
    compact.load(plans[1], reuse=True)  # slots no longer in plan order
    assert not torch.equal(compact.channels(), plans[1].indices)
    assert torch.equal(compact.channels().sort(1).values, plans[1].indices.sort(1).values)
    inputs = AnswerInputs(lm.num_layers)
    engine = LeanDecoder(compact.model, 16)
    with inputs.record(compact.compact_layout, engine=engine):
        engine.feed([5, 6, 7, 8, 9])
        engine.feed([10])
    xs, acts = inputs.take()
    assert xs[0].shape[0] == 6 and acts[0].shape == (6, 24)
    torch.testing.assert_close(kept_squares(lm, xs, acts, compact.channels()), full_squares(lm, xs),
                               atol=2e-2 if quant else 1e-5, rtol=2e-2 if quant else 1e-4)
