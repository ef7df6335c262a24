import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.runtime.generation import SamplingConfig, generate
from ifprune.core.hooks import MaskedFFN
from ifprune.core.prompting import encode_prompt
from ifprune.core.tiny import tiny_lm


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", layers=3)


def test_greedy_is_deterministic_and_reports_everything(lm):
    kw = dict(selector="griffin", width=20, sampling=SamplingConfig(max_new_tokens=8))
    a, b = generate(lm, "hello there", **kw), generate(lm, "hello there", **kw)
    assert a.text == b.text and a.plan_hash == b.plan_hash
    assert a.ffn_width == 20 and a.new_tokens == 8 and a.prompt_tokens > 0
    assert a.total_params == sum(p.numel() for p in lm.model.parameters())
    assert a.active_params == a.total_params - (48 - 20) * 3 * 32 * 3
    assert set(a.timings) == {"selection_s", "loading_s", "prefill_s", "decode_s"}
    assert all(v >= 0 for v in a.timings.values())
    assert "FFN width 20/48" in a.summary()


def test_compact_generation_equals_masked_full_model(lm):
    res = generate(lm, "count to ten", selector="random", width=16, sampling=SamplingConfig(max_new_tokens=10))
    ids = encode_prompt(lm.tokenizer, "count to ten")
    with torch.no_grad(), MaskedFFN(lm.layout).apply(res.plan.to_mask()):
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
    assert lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == res.text


def test_sampling_is_seeded(lm):
    s = SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    assert generate(lm, "hi", sampling=s).text == generate(lm, "hi", sampling=s).text


def test_streaming_writes_the_answer(lm):
    import io

    buf = io.StringIO()
    res = generate(lm, "hi", sampling=SamplingConfig(max_new_tokens=6), stream=buf)
    assert buf.getvalue().strip() == res.text.strip()


@pytest.mark.parametrize("prompt,sampling,match", [
    ("", SamplingConfig(), "prompt is empty"),
    ("x" * 300, SamplingConfig(max_new_tokens=10), "exceeds the model's context of 256 tokens"),
    ("hi", SamplingConfig(max_new_tokens=0), "max_new_tokens must be >= 1"),
    ("hi", SamplingConfig(temperature=-1), "temperature must be >= 0"),
])
def test_bad_input(lm, prompt, sampling, match):
    with pytest.raises(IfpruneError, match=match):
        generate(lm, prompt, sampling=sampling)
