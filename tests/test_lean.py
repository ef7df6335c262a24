"""The torch decoder (runtime.lean): the same tokens and logits as the model's own forward and `generate`, for
every architecture it takes; the others are left to `generate`."""

import pytest
import torch

from ifprune.core.tiny import tiny_config, tiny_lm, tiny_model
from ifprune.runtime import generation
from ifprune.runtime.generation import SamplingConfig, generate
from ifprune.runtime.lean import LeanDecoder, supports
from ifprune.runtime.segment import run_segment

LEAN = ("llama", "mistral", "qwen2", "qwen3")


def hf_generate(model, ids, n, **kw):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, pad_token_id=0, **kw)


@pytest.mark.parametrize("arch", LEAN)
def test_greedy_tokens_are_generates(arch):
    model = tiny_model(arch).eval()
    ids = torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(1))
    want = hf_generate(model, ids, 20, do_sample=False, min_new_tokens=20)
    got = run_segment(LeanDecoder(model, 40), ids, 20, SamplingConfig(max_new_tokens=20, ignore_eos=True),
                      [model.config.eos_token_id])
    assert torch.equal(got, want)


@pytest.mark.parametrize("arch", LEAN)
def test_logits_match_the_forward_whatever_the_chunks_and_prefix(arch):
    model = tiny_model(arch).eval()
    ids = torch.randint(3, 100, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(ids, use_cache=True)
    want = out.logits[0, -1]
    dec = LeanDecoder(model, 16)
    dec.feed(ids[0, :5].tolist())
    dec.feed(ids[0, 5:6].tolist())
    torch.testing.assert_close(dec.feed(ids[0, 6:].tolist()), want, atol=1e-5, rtol=1e-5)
    dec.truncate(4)  # the first four positions stay; the rest is read again
    torch.testing.assert_close(dec.feed(ids[0, 4:].tolist()), want, atol=1e-5, rtol=1e-5)
    fresh = LeanDecoder(model, 16)
    fresh.set_prefix(out.past_key_values, 11)  # another model's cache of the first 11 positions
    torch.testing.assert_close(fresh.feed(ids[0, 11:].tolist()), want, atol=1e-5, rtol=1e-5)


def test_sampling_follows_the_seed():
    model = tiny_model("llama").eval()
    ids = torch.randint(3, 100, (1, 6), generator=torch.Generator().manual_seed(3))
    s = SamplingConfig(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=20, repetition_penalty=1.1)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(run_segment(LeanDecoder(model, 20), ids, 12, s, []))
    assert torch.equal(*runs)


def test_other_architectures_are_left_to_generate():
    assert not supports(tiny_model("gemma"))
    assert not supports(tiny_model("gpt2"))
    from transformers import MistralForCausalLM, Qwen2ForCausalLM

    windowed = tiny_config("mistral")
    windowed.sliding_window = 4
    assert not supports(MistralForCausalLM(windowed))
    windowed = tiny_config("qwen2")
    windowed.layer_types = ["sliding_attention"] * windowed.num_hidden_layers
    assert not supports(Qwen2ForCausalLM(windowed))


def test_generation_answers_as_generate_did(monkeypatch):
    """The whole default path (dense prefill, re-selection every R, int8 and float32): the engine changes
    nothing in the answer."""
    lm = tiny_lm("llama", layers=3)
    for quant in (None, "int8"):
        from ifprune.runtime.generation import RuntimeConfig

        rt = RuntimeConfig(weights=quant)
        kw = dict(selector="griffin", width=lm.d_ffn // 2, sampling=SamplingConfig(max_new_tokens=14, ignore_eos=True),
                  reselect="every", reselect_tokens=4, prefill="dense-answer", runtime=rt)
        lean = generate(lm, "count to ten", **kw)
        monkeypatch.setattr(generation, "lean_ok", lambda model: False)
        slow = generate(lm, "count to ten", **kw)
        monkeypatch.undo()
        assert lean.text == slow.text and lean.new_tokens == slow.new_tokens == 14
        assert lean.reselection == slow.reselection and lean.reselection["count"] == 3


@pytest.mark.parametrize("prefill", ["pruned", "dense", "dense-answer"])
def test_the_scorer_decodes_as_before_stop_strings_included(monkeypatch, prefill):
    """eval's generation (the scorer) runs the same loop and engine as `generate` (runtime.generation.decode_answer):
    the same text as with transformers.generate, stop strings cut where they did."""
    from ifprune.eval.scorer import Scorer
    from ifprune.selection.selectors import make_selector

    lm = tiny_lm("llama", layers=3)
    sc = Scorer(lm, make_selector("griffin"), lm.d_ffn // 2, refresh=3, refresh_every=True, prefill=prefill)
    prompt = "count to ten"
    plan = sc.plan_for(prompt)
    ids = sc.encode(prompt, chat=True)
    free = sc.generate(plan, ids, max_new_tokens=12)
    stop = [free[4:6]]  # a string the free answer holds
    got = [free, sc.generate(plan, ids, max_new_tokens=12, stop=stop)]
    monkeypatch.setattr(generation, "lean_ok", lambda model: False)
    want = [sc.generate(plan, ids, max_new_tokens=12), sc.generate(plan, ids, max_new_tokens=12, stop=stop)]
    assert got == want and len(got[1]) < len(got[0])
