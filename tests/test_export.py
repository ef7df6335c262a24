"""Export round trip: plain transformers (no ifprune objects involved in loading) reproduces the
compact model's logits, for several families and for the real default model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ifprune.cli import main
from ifprune.core.errors import IfpruneError
from ifprune.export.checkpoint import export_plan, export_task
from ifprune.core.plan import Plan
from ifprune.selection.selectors import make_selector
from ifprune.core.tiny import tiny_lm

TASK = "write a python function"


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt_neox", "gpt2", "gemma2"])
def test_export_roundtrip_matches_compact(tmp_path, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = tiny_lm(arch)
    info = export_task(lm, make_selector("griffin"), TASK, 20, tmp_path / "out")
    out = tmp_path / "out"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg[lm.layout.family.width_attr] == 20
    card = (out / "README.md").read_text()
    assert "tiny-" + arch in card and TASK in card and "20 of 48" in card and info.plan_hash in card
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.eos_token == "</s>"
    ids = tok.apply_chat_template([{"role": "user", "content": "def add(a, b):"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    compact = lm.compact(20)
    compact.load(Plan.load(out / "ifprune_plan.json"))
    with torch.no_grad():
        exported, ours, full = model(ids).logits, compact.model(ids).logits, lm.model(ids).logits
    torch.testing.assert_close(exported, ours, rtol=0, atol=1e-5)
    assert (exported - full).abs().max() > 1e-3  # really pruned
    assert sum(p.numel() for p in model.parameters()) == info.active_params


@pytest.mark.parametrize("arch,mode", [("llama", "calibration"), ("gpt2", "calibration"), ("llama", "mean"),
                                       ("gpt2", "mean")])
def test_exported_refit_checkpoint_gives_the_compact_refit_logits(tmp_path, arch, mode, monkeypatch):
    """With compensation the checkpoint carries the refit down projection (and bias) and stays a
    stock config; plain transformers reproduces the compact refit model. Mode "mean" on Llama turns on
    the config's `mlp_bias` (zero gate and up biases)."""
    from transformers import AutoModelForCausalLM

    from ifprune.compensation.calibration import CompensationConfig, compensate

    monkeypatch.setenv("IFPRUNE_CACHE", str(tmp_path / "cache"))
    calib = tmp_path / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog; 12 + 30 = 42.\n\n" * 30)
    lm = tiny_lm(arch)
    compensate(lm, CompensationConfig(mode=mode, calibration=str(calib), max_tokens=4096), progress=False)
    info = export_task(lm, make_selector("griffin"), TASK, 20, tmp_path / "out")
    assert info.compensation["mode"] == mode
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg.get("mlp_bias", False) == (arch == "llama" and mode == "mean")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    compact = lm.compact(20)
    compact.load(Plan.load(tmp_path / "out" / "ifprune_plan.json"))
    ids = torch.randint(7, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exported, ours = model(ids).logits, compact.model(ids).logits
    torch.testing.assert_close(exported, ours, rtol=0, atol=1e-5)
    compensate(lm, "none")
    plain = lm.compact(20)
    plain.load(Plan.load(tmp_path / "out" / "ifprune_plan.json"))
    with torch.no_grad():
        assert (plain.model(ids).logits - exported).abs().max() > 1e-3  # the refit is in the file


def test_export_loads_in_a_process_without_ifprune(tmp_path):
    lm = tiny_lm("llama")
    plan = make_selector("random").select(lm, None, 12)
    export_plan(lm, plan, tmp_path / "m")
    code = ("import sys, json, transformers; m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]);"
            "assert 'ifprune' not in sys.modules; print(json.dumps(m.config.intermediate_size))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "12"


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt_neox"])
def test_export_has_exactly_the_stock_layout(tmp_path, arch):
    """What vLLM (or any stock loader) relies on: the config and tensors a stock model of the exported
    config would save, names, shapes and dtypes, a stock architecture and no custom code."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    lm = tiny_lm(arch)
    export_plan(lm, make_selector("random").select(lm, None, 16), tmp_path / "m")
    cfg = AutoConfig.from_pretrained(tmp_path / "m")
    stock = AutoModelForCausalLM.from_config(cfg)
    stock.save_pretrained(tmp_path / "stock")

    def tensors(d):
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                out.update({k: (tuple(st.get_slice(k).get_shape()), st.get_slice(k).get_dtype()) for k in st.keys()})
        return out

    assert tensors(tmp_path / "m") == tensors(tmp_path / "stock")
    ours = json.loads((tmp_path / "m" / "config.json").read_text())
    theirs = json.loads((tmp_path / "stock" / "config.json").read_text())
    assert set(ours) == set(theirs) and "auto_map" not in ours
    assert ours["architectures"] == [type(lm.model).__name__]
    assert ours[lm.layout.family.width_attr] == 16


def test_export_dtype_converts_a_copy_and_never_the_running_model(tmp_path):
    from safetensors import safe_open

    lm = tiny_lm("llama")
    plan = make_selector("random").select(lm, None, 16)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    info = export_plan(lm, plan, tmp_path / "bf16", dtype="bfloat16")
    assert info.dtype == "bfloat16"
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as st:
        assert {st.get_slice(k).get_dtype() for k in st.keys()} == {"BF16"}
        compact = lm.compact(16).model.state_dict()
        for k in st.keys():
            assert torch.equal(st.get_tensor(k), compact[k].to(torch.bfloat16)), k
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    for k, v in lm.model.state_dict().items():  # the shared non-FFN tensors were not converted in place
        assert v.dtype == torch.float32 and torch.equal(v, before[k]), k
    # auto: the source's declared dtype; an in-process model declares none, so the running one
    assert export_plan(lm, plan, tmp_path / "auto").dtype == "float32"
    lm.source_dtype = torch.float16
    assert export_plan(lm, plan, tmp_path / "f16").dtype == "float16"
    with pytest.raises(IfpruneError, match="unknown export dtype"):
        export_plan(lm, plan, tmp_path / "x", dtype="int3")
    card = (tmp_path / "auto" / "README.md").read_text()
    assert "base_model:" not in card  # no Hub id known: no link to a wrong repository


def test_export_refuses_bad_input(tmp_path):
    lm = tiny_lm("llama")
    plan = make_selector("random").select(lm, None, 12)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(IfpruneError, match="already exists"):
        export_plan(lm, plan, tmp_path / "busy")
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    with pytest.raises(IfpruneError, match="task description is empty"):
        export_task(lm, make_selector("griffin"), "  ", 12, tmp_path / "o")
    with pytest.raises(IfpruneError, match="plan is for"):
        export_plan(lm, Plan.dense(3, 48), tmp_path / "o")
    export_plan(lm, plan, tmp_path / "busy", overwrite=True)
    assert not (tmp_path / "busy" / "x").exists() and (tmp_path / "busy" / "config.json").exists()


def test_an_export_the_disk_cannot_hold_is_refused_before_writing(tmp_path, monkeypatch):
    from ifprune.core import memory
    from ifprune.export.gguf import export_gguf

    lm = tiny_lm("llama")
    plan = make_selector("random").select(lm, None, 12)
    monkeypatch.setattr(memory, "free_disk_bytes", lambda path: 1000)
    with pytest.raises(IfpruneError, match=r"the export needs about .* GB of disk at .* free: free space there"):
        export_plan(lm, plan, tmp_path / "hf")
    for qtype in ("q8_0", "q4_k_m"):
        with pytest.raises(IfpruneError, match=f"the {qtype} GGUF export needs about"):
            export_gguf(lm, plan, tmp_path / f"m-{qtype}.gguf", qtype=qtype)
    assert list(tmp_path.iterdir()) == []  # nothing partial left
    monkeypatch.setattr(memory, "free_disk_bytes", lambda path: None)  # unknown: not refused
    export_plan(lm, plan, tmp_path / "hf")


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", "--plan", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")]) == 2
    assert "plan file not found" in capsys.readouterr().err
    assert main(["export", "--task", " ", "--out", str(tmp_path / "o")]) == 2
    assert "task description is empty" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_export_real_model(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from ifprune.core.loading import load_model

    out = tmp_path / "code"
    assert main(["export", "--task", "Write Python code", "--keep", "0.25", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    from ifprune.artifacts import packaged_artifact

    shipped = packaged_artifact(None)
    # the default selector is the shipped trained predictor (its LoRA merged into the export), else griffin
    assert info["width"] == 384 and info["selector"] == ("predictor" if shipped else "griffin")
    # the packaged model's own dtype (its GGUF comes from a bf16 checkpoint), its Hub id in the card
    assert info["dtype"] == "bfloat16" and info["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert (out / "README.md").read_text().startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert "Q4_1 GGUF" in (out / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert model.config.intermediate_size == 384
    lm = load_model()
    if shipped:
        from ifprune.selection.artifact import load_artifact

        load_artifact(shipped).attach(lm)
    from ifprune.compensation.calibration import compensate

    plan = Plan.load(out / "ifprune_plan.json")
    # the default: compensation on training-free plans, none on a trained artifact's tuned weights
    mode = "none" if shipped else "calibration"
    assert plan.meta["compensation"]["mode"] == mode and info["compensation"]["mode"] == mode
    card = (out / "README.md").read_text()
    assert ("the base model's kept columns" if shipped else "refit by least squares") in card
    if shipped:
        assert "tuned by the trained artifact" in card and info["weights"]["tuned_by"]
    compensate(lm, mode)  # the default, as the CLI used: the export carries exactly those down projections
    compact = lm.compact(384)
    compact.load(plan)
    exported = model.state_dict()
    for k, v in compact.model.state_dict().items():  # exactly the compact model's tensors, rounded to bf16
        assert torch.equal(exported[k], v.to(torch.bfloat16).float()), k
    ids = lm.tokenizer("def fib(n):", return_tensors="pt")["input_ids"]
    with torch.no_grad():  # same maths on bf16-rounded weights: close to the float32 compact model's logits
        got, want = model(ids).logits, compact.model(ids).logits
    kl = (want.log_softmax(-1).exp() * (want.log_softmax(-1) - got.log_softmax(-1))).sum(-1)
    print("bf16 export vs float32 compact: max |logit diff|", float((got - want).abs().max()), "KL", kl.tolist())
    assert float(kl.max()) < 1e-2 and torch.equal(got.argmax(-1), want.argmax(-1))


def test_export_out_under_a_file_or_onto_a_file_is_one_clear_error(tmp_path):
    lm = tiny_lm("llama")
    plan = make_selector("random").select(lm, None, 12)
    (tmp_path / "afile").write_text("keep me")
    with pytest.raises(IfpruneError, match="afile is a file, not a folder"):
        export_plan(lm, plan, tmp_path / "afile" / "sub")
    with pytest.raises(IfpruneError, match="is a file: an export is a directory.*never a file"):
        export_plan(lm, plan, tmp_path / "afile", overwrite=True)
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("arch,mode", [("llama", "none"), ("llama", "calibration"), ("llama", "mean"),
                                       ("gpt2", "mean"), ("phi3", "none")])
def test_export_that_consumes_the_model_writes_what_the_compact_model_runs(tmp_path, arch, mode, monkeypatch):
    """The CLI's path (`consume`): the full model shrunk in place gives the same checkpoint, byte for byte in its
    tensors, as the compact model beside it; the spent model then refuses to select or compact."""
    from safetensors.torch import load_file

    from ifprune.compensation.calibration import CompensationConfig, compensate

    monkeypatch.setenv("IFPRUNE_CACHE", str(tmp_path / "cache"))
    calib = tmp_path / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog; 12 + 30 = 42.\n\n" * 30)
    lms = [tiny_lm(arch), tiny_lm(arch)]
    for lm in lms:
        if mode != "none":
            compensate(lm, CompensationConfig(mode=mode, calibration=str(calib), max_tokens=4096), progress=False)
    plan = make_selector("random").select(lms[0], None, 20)
    kept = export_plan(lms[0], plan, tmp_path / "kept")
    spent = export_plan(lms[1], plan, tmp_path / "spent", consume=True)
    assert kept.to_dict() | {"out": None} == spent.to_dict() | {"out": None}
    assert ("statistics_tokens" in spent.compensation) == (mode != "none")
    a, b = load_file(tmp_path / "kept" / "model.safetensors"), load_file(tmp_path / "spent" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "kept" / "config.json").read_text()) == \
        json.loads((tmp_path / "spent" / "config.json").read_text())
    with pytest.raises(IfpruneError, match="shrunk in place"):
        lms[1].compact(20)
    with pytest.raises(IfpruneError, match="shrunk in place"):
        export_plan(lms[1], plan, tmp_path / "again", consume=True)
