import json

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.plan import Plan, width_from_keep


def test_from_scores_keeps_top_k_sorted():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [1.0, 0.0, 0.2, 0.3]])
    plan = Plan.from_scores(scores, 2)
    assert plan.indices.tolist() == [[1, 3], [0, 3]]
    assert plan.to_mask().tolist() == [[0, 1, 0, 1], [1, 0, 0, 1]]


def test_ties_break_towards_lower_index_deterministically():
    plan = Plan.from_scores(torch.ones(3, 10), 4)
    assert plan.indices.tolist() == [[0, 1, 2, 3]] * 3


@pytest.mark.parametrize("indices,d,msg", [
    ([[0, 0]], 4, "sorted and unique"),
    ([[2, 1]], 4, "sorted and unique"),
    ([[0, 4]], 4, "0..3"),
    ([[-1, 2]], 4, "0..3"),
    ([0, 1], 4, r"\[layers, width\]"),
    ([[0, 1, 2, 3, 4]], 4, "outside 1..4"),
])
def test_invalid_plans_are_rejected(indices, d, msg):
    with pytest.raises(IfpruneError, match=msg):
        Plan(indices, d)


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_round_trip_and_hash(tmp_path, suffix):
    plan = Plan.from_scores(torch.randn(5, 64, generator=torch.Generator().manual_seed(0)), 20, {"selector": "x"})
    path = plan.save(tmp_path / f"p{suffix}")
    back = Plan.load(path)
    assert back == plan and back.hash == plan.hash and hash(back) == hash(plan)
    assert torch.equal(back.indices, plan.indices) and back.meta == {"selector": "x"}
    other = Plan.from_scores(torch.randn(5, 64), 20)
    assert other.hash != plan.hash


def test_tampered_or_corrupt_plan_files_are_refused(tmp_path):
    plan = Plan.from_scores(torch.randn(2, 8), 3)
    obj = plan.to_dict()
    obj["indices"][0][0] = (obj["indices"][0][0] + 1) % 8 if obj["indices"][0][0] + 1 not in obj["indices"][0] else obj["indices"][0][0]
    bad = tmp_path / "tampered.json"
    obj["indices"] = [[0, 1, 2], [0, 1, 2]]
    bad.write_text(json.dumps(obj))
    with pytest.raises(IfpruneError, match="hash mismatch"):
        Plan.load(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(IfpruneError, match="cannot read plan"):
        Plan.load(junk)
    with pytest.raises(IfpruneError, match="not found"):
        Plan.load(tmp_path / "missing.json")


def test_width_from_keep():
    assert width_from_keep(0.5, None, 1536) == 768
    assert width_from_keep(1 / 3, None, 1536) == 512
    assert width_from_keep(None, 100, 1536) == 100
    assert width_from_keep(None, None, 1536) == 1536
    assert width_from_keep(1e-6, None, 1536) == 1
    for keep in (0, -0.1, 1.5):
        with pytest.raises(IfpruneError, match=r"keep ratio .* \(0, 1\]"):
            width_from_keep(keep, None, 1536)
    for width in (0, 1537):
        with pytest.raises(IfpruneError, match=r"out of range: use 1..1536"):
            width_from_keep(None, width, 1536)
    with pytest.raises(IfpruneError, match="not both"):
        width_from_keep(0.5, 10, 1536)


@pytest.mark.parametrize("text,match", [("[1, 2]", "expected a JSON object"), ('"plan"', "expected a JSON object"),
                                        ("null", "expected a JSON object"),
                                        ('{"indices": [[0.5, 1]], "d_ffn": 4}', "whole numbers"),
                                        ('{"indices": [[true, false]], "d_ffn": 4}', "must be integers"),
                                        ('{"indices": [[0, 1]], "d_ffn": 4, "meta": []}', "metadata must be a mapping"),
                                        ('{"indices": [[0, 1]], "d_ffn": "four"}', "d_ffn must be an integer")])
def test_malformed_plan_files_are_one_clear_error(tmp_path, text, match):
    p = tmp_path / "plan.json"
    p.write_text(text)
    with pytest.raises(IfpruneError, match=match):
        Plan.load(p)


def test_a_plan_made_on_other_weights_is_refused():
    from ifprune.core.tiny import tiny_lm
    from ifprune.selection.selectors import make_selector

    a, b = tiny_lm(seed=0), tiny_lm(seed=1)
    plan = make_selector("griffin").select(a, "hello", 8)
    assert plan.meta["model"] == a.fingerprint()
    plan.check_model(a)
    with pytest.raises(IfpruneError, match="was made on model weights .*select again with this model"):
        plan.check_model(b)
    old = Plan(plan.indices, plan.d_ffn, {"selector": "griffin"})  # a plan from before fingerprints: accepted
    old.check_model(b)
