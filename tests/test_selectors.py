import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.hooks import record_intermediates
from ifprune.core.plan import Plan
from ifprune.selection.selectors import GriffinSelector, make_selector
from ifprune.core.tiny import tiny_lm


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama", layers=3)


def test_random_is_seeded_and_static(lm):
    a = make_selector("random", seed=3).select(lm, "anything", 10)
    b = make_selector("random", seed=3).select(lm, "something else", 10)
    c = make_selector("random", seed=4).select(lm, "anything", 10)
    assert a == b and a != c and a.width == 10 and a.meta["selector"] == "random"


def test_magnitude_scores_are_weight_norm_products(lm):
    plan = make_selector("magnitude").select(lm, None, 8)
    mlp = lm.model.model.layers[1].mlp
    up = (mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)).sqrt()
    down = mlp.down_proj.weight.norm(dim=0)
    expect = torch.sort(torch.topk(up * down, 8).indices).values
    assert plan.indices[1].tolist() == expect.tolist()


def test_wanda_uses_calibration_activations(lm, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("the quick brown fox jumps over the lazy dog.\n\n" * 20)
    plan = make_selector("wanda", calibration=calib).select(lm, None, 8)
    mag = make_selector("magnitude").select(lm, None, 8)
    assert plan.width == 8 and plan != mag
    with pytest.raises(IfpruneError, match="calibration file not found"):
        make_selector("wanda", calibration=tmp_path / "nope.txt").select(lm, None, 8)
    assert make_selector("wanda").options()["calibration"] == "default.jsonl"  # the packaged mix
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(IfpruneError, match=r"bad.jsonl:2: malformed JSON line"):
        make_selector("wanda", calibration=bad).select(lm, None, 8)
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(IfpruneError, match="needs at least"):
        make_selector("wanda", calibration=short).select(lm, None, 8)


def test_griffin_follows_its_definition(lm):
    """Unit-normalise each token's activation row, then take the L2 norm of each channel's column."""
    from ifprune.core.prompting import encode_prompt

    prompt = "write a poem about the sea"
    ids = encode_prompt(lm.tokenizer, prompt)
    acts = {}
    with torch.no_grad(), record_intermediates(lm.layout, lambda i, x: acts.__setitem__(i, x[0])):
        lm.model(ids)
    expect = torch.stack([(a / a.norm(dim=-1, keepdim=True)).norm(dim=0) for _, a in sorted(acts.items())])
    got = GriffinSelector().scores(lm, prompt)
    torch.testing.assert_close(got, expect)
    assert GriffinSelector().select(lm, prompt, 12) == Plan.from_scores(expect, 12)


def test_griffin_is_per_prompt_and_batched_scores_ignore_padding(lm):
    sel = make_selector("griffin")
    a = sel.select(lm, "solve 12 + 30 = ?", 16)
    b = sel.select(lm, "Translate to French: good morning, my friend", 16)
    assert a != b
    from ifprune.core.prompting import encode_prompt

    i1 = encode_prompt(lm.tokenizer, "short")
    i2 = encode_prompt(lm.tokenizer, "a much longer prompt here")
    pad = torch.full((1, i2.shape[1] - i1.shape[1]), lm.tokenizer.pad_token_id)
    ids = torch.cat([torch.cat([pad, i1], 1), i2])
    mask = (torch.arange(ids.shape[1]) >= pad.shape[1]).long().unsqueeze(0).expand(2, -1).clone()
    mask[1] = 1
    batched = GriffinSelector.scores_from_ids(lm, ids, attention_mask=mask)
    assert batched.shape == (2, lm.num_layers, lm.d_ffn)
    # left padding with a proper attention mask: the short prompt's scores match its unpadded run
    single = GriffinSelector.scores_from_ids(lm, i1)
    torch.testing.assert_close(batched[0], single, rtol=1e-4, atol=1e-4)


def test_per_task_plans_are_cached(lm):
    sel = make_selector("griffin")
    p1 = sel.select(lm, "Task: grade-school math word problems", 16)
    p2 = sel.select(lm, "Task: grade-school math word problems", 16)
    assert p1 is p2


def test_errors(lm):
    with pytest.raises(IfpruneError, match="unknown selector 'nope'; choose from"):
        make_selector("nope")
    with pytest.raises(IfpruneError, match="dense selector keeps all"):
        make_selector("dense").select(lm, "x", 10)
    with pytest.raises(IfpruneError, match="out of range"):
        make_selector("random").select(lm, "x", 0)
    with pytest.raises(IfpruneError, match="prompt is empty"):
        make_selector("griffin").select(lm, "   ", 10)


def test_make_selector_refuses_a_misspelt_option_and_names_the_right_one():
    with pytest.raises(IfpruneError, match=r"unknown option\(s\) 'chekpoint' \(did you mean 'checkpoint'\?\)"):
        make_selector("predictor", chekpoint="x")
    with pytest.raises(IfpruneError, match=r"'sead'.*griffin takes cache_size, chat"):
        make_selector("griffin", sead=1)
    # an option another selector takes passes through (the CLI hands every selector flag to any selector)
    assert make_selector("griffin", seed=3, calibration=None, checkpoint=None).name == "griffin"
    assert make_selector("random", seed=3, cache_size=4).name == "random"
