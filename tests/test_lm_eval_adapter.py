"""The `ifprune` lm-eval model, run offline by lm-eval itself on task YAMLs over local JSONL files
(loglikelihood via multiple_choice, loglikelihood_rolling, generate_until)."""

import json

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")


def _write_tasks(tmp_path):
    rows = [{"q": "Is fire hot?", "choices": ["yes", "no"], "gold": 0, "text": "The sky is blue."},
            {"q": "Is ice hot?", "choices": ["yes", "no"], "gold": 1, "text": "Water is wet and cold."},
            {"q": "Is snow cold?", "choices": ["yes", "no"], "gold": 0, "text": "Grass grows in spring."}]
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tmp_path / "mc.yaml").write_text(
        "task: ifprune_tiny_mc\n" + common + "output_type: multiple_choice\ndoc_to_text: \"Question: {{q}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: gold\nmetric_list:\n  - metric: acc\n")
    (tmp_path / "ppl.yaml").write_text(
        "task: ifprune_tiny_ppl\n" + common + "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\n"
        "doc_to_target: \"{{text}}\"\nmetric_list:\n  - metric: word_perplexity\n")
    (tmp_path / "gen.yaml").write_text(
        "task: ifprune_tiny_gen\n" + common + "output_type: generate_until\ndoc_to_text: \"Question: {{q}}\\nAnswer:\"\n"
        "doc_to_target: \"{{choices[gold]}}\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 5\n"
        "metric_list:\n  - metric: exact_match\n")


@pytest.mark.parametrize("selector,keep", [("griffin", 0.5)])  # one run: lm-eval itself takes ~30 s
def test_lm_eval_runs_ifprune_on_local_tasks(tmp_path, selector, keep):
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    import ifprune.eval.lm_eval_adapter  # noqa: F401  (registers "ifprune")
    from ifprune.core.tiny import tiny_lm

    torch.set_num_threads(1)
    _write_tasks(tmp_path)
    cls = get_model("ifprune")
    model = cls(lm=tiny_lm("llama"), selector=selector, keep=keep)
    out = simple_evaluate(model=model, tasks=["ifprune_tiny_mc", "ifprune_tiny_ppl", "ifprune_tiny_gen"],
                          task_manager=TaskManager(include_path=str(tmp_path)), limit=3)
    res = out["results"]
    assert 0 <= res["ifprune_tiny_mc"]["acc,none"] <= 1
    assert res["ifprune_tiny_ppl"]["word_perplexity,none"] > 1
    assert 0 <= res["ifprune_tiny_gen"]["exact_match,none"] <= 1
    assert model.scorer.width == (48 if keep is None else round(keep * 48))


def test_model_args_string_and_errors():
    from ifprune.core.errors import IfpruneError
    from ifprune.eval.lm_eval_adapter import IfpruneLM
    from ifprune.core.tiny import tiny_lm

    lm = tiny_lm("llama")
    # the defaults every command shares: griffin (no shipped artifact for this model), keep 0.5
    d = IfpruneLM(lm=lm, compensate="none")
    assert d.scorer.selector.name == "griffin" and d.scorer.width == 24
    assert IfpruneLM(lm=lm, selector="griffin", compensate="none").scorer.width == 24
    m = IfpruneLM(lm=lm, selector="random", width=12, seed=3)
    assert m.scorer.width == 12 and m.scorer.selector.seed == 3
    assert m.scorer.compensation()["mode"] == "calibration"  # the CLI's default
    assert IfpruneLM(lm=lm, selector="random", width=12, compensate="none").scorer.compensation() == {"mode": "none"}
    with pytest.raises(IfpruneError, match="unknown compensation mode"):
        IfpruneLM(lm=lm, selector="random", width=12, compensate="always")
    # re-selection options as model_args text: refresh_every=true runs a dense-answer prefill unless told otherwise
    n = IfpruneLM(lm=lm, selector="griffin", compensate="none", reselect="every", reselect_tokens="4")  # the one spelling
    assert (n.scorer.refresh, n.scorer.refresh_every, n.scorer.prefill) == (4, True, "dense-answer")
    e = IfpruneLM(lm=lm, selector="griffin", compensate="none", refresh="4", refresh_every="true")
    assert (e.scorer.refresh, e.scorer.refresh_every, e.scorer.prefill) == (4, True, "dense-answer")
    p = IfpruneLM(lm=lm, selector="griffin", compensate="none", refresh=4, refresh_every=False, prefill="dense")
    assert (p.scorer.refresh_every, p.scorer.prefill) == (False, "dense")
    with pytest.raises(IfpruneError, match="refresh_every='maybe': write true or false"):
        IfpruneLM(lm=lm, selector="griffin", compensate="none", refresh=4, refresh_every="maybe")
    with pytest.raises(IfpruneError, match="turn re-selection on"):
        IfpruneLM(lm=lm, selector="griffin", compensate="none", refresh_every=True)
    with pytest.raises(IfpruneError, match="prefill must be one of"):
        IfpruneLM(lm=lm, selector="griffin", compensate="none", prefill="half")


DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data not present")
@pytest.mark.slow
def test_local_task_yamls_give_stock_lm_eval_and_the_adapter_the_same_numbers(tmp_path, monkeypatch):
    """Offline: the shipped task configs over ../shared/data, stock `hf` on an exported checkpoint and
    the `ifprune` adapter on the same plan score the same (per-sample loglikelihoods included)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ifprune.core.tiny import tiny_lm
    from ifprune.eval.lm_eval_adapter import IfpruneLM
    from ifprune.eval.lm_eval_tasks import write_tasks
    from ifprune.export.checkpoint import export_plan
    from ifprune.selection.selectors import make_selector

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    names = write_tasks(DATA, tmp_path / "tasks")
    assert {"local_arc_easy", "local_boolq", "local_winogrande", "local_gsm8k", "local_mmlu"} <= set(names)
    lm = tiny_lm("llama")
    plan = make_selector("random", seed=3).select(lm, None, 24)
    export_plan(lm, plan, tmp_path / "exp")
    tasks = ["local_arc_easy", "local_winogrande", "local_mmlu_anatomy"]
    tm = TaskManager(include_path=str(tmp_path / "tasks"))
    stock = simple_evaluate(model=HFLM(pretrained=str(tmp_path / "exp"), device="cpu", dtype="float32"), tasks=tasks,
                            task_manager=tm, limit=4, log_samples=True)
    ours = simple_evaluate(model=IfpruneLM(lm=lm, selector="random", seed=3, width=24, compensate="none"),
                           tasks=tasks, task_manager=tm, limit=4, log_samples=True)
    for t in tasks:
        assert stock["results"][t]["acc,none"] == ours["results"][t]["acc,none"], t
        a = [r["resps"] for r in stock["samples"][t]]
        b = [r["resps"] for r in ours["samples"][t]]
        for ra, rb in zip(a, b):
            for (la, _), (lb, _) in zip((x[0] for x in ra), (x[0] for x in rb)):
                assert abs(float(la) - float(lb)) < 1e-3, (t, la, lb)


def test_a_cuda_device_without_cuda_runs_on_the_cpu(caplog):
    import logging

    from ifprune.eval.lm_eval_adapter import usable_device

    assert usable_device(None) == "cpu" and usable_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING, logger="ifprune"):
            assert usable_device("cuda:0") == "cpu"
        assert "CUDA is not available" in caplog.text
