"""The CLI on real (tiny) model directories: output contract and one-line errors."""

import json
import subprocess
import sys

import pytest

from ifprune.cli import main
from ifprune.core.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def test_generate_json_contract(tiny_dir, capsys):
    rc = main(["generate", "hello", "--model", str(tiny_dir), "--keep", "0.5", "--max-new-tokens", "5", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("text", "selector", "ffn_width", "active_params", "total_params", "timings", "new_tokens"):
        assert key in out
    assert out["selector"] == "griffin" and out["ffn_width"] == 24 and out["new_tokens"] == 5
    assert set(out["timings"]) == {"selection_s", "loading_s", "prefill_s", "decode_s"}
    assert out["active_params"] < out["total_params"]


def test_generate_text_summary_and_plan_round_trip(tiny_dir, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["generate", "hello", "--model", str(tiny_dir), "--width", "10", "--selector", "magnitude",
                 "--max-new-tokens", "4", "--save-plan", str(plan), "--no-stream"]) == 0
    err = capsys.readouterr().err
    assert "[magnitude int8]" in err and "FFN width 10/48" in err and "decode" in err  # (int8: the CPU default)
    assert main(["generate", "hello", "--model", str(tiny_dir), "--plan", str(plan), "--max-new-tokens", "4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ffn_width"] == 10 and out["selector"] == "magnitude"


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_save_plan_after_a_re_selection_writes_both_plans(tiny_dir, tmp_path, capsys, suffix):
    from ifprune.core.plan import Plan

    plan = tmp_path / f"plan{suffix}"
    assert main(["generate", "hello", "--model", str(tiny_dir), "--keep", "0.5", "--compensate", "none",
                 "--max-new-tokens", "6", "--refresh", "3", "--save-plan", str(plan), "--json",
                 "--quant", "none"]) == 0  # (this random model's int8 answer ends before a re-selection)
    out = json.loads(capsys.readouterr().out)
    second = tmp_path / f"plan.reselected{suffix}"
    assert out["reselection"]["tokens"] == 3 and out["saved_plans"] == {"prompt": str(plan), "reselected": str(second)}
    first, again = Plan.load(plan), Plan.load(second)
    assert first.hash == out["plan_hash"] and again.hash == out["reselection"]["plan_hash"] != first.hash
    assert again.meta["reselected_after"] == 3 and again.width == first.width == 24
    assert main(["generate", "hello", "--model", str(tiny_dir), "--keep", "0.5", "--compensate", "none",
                 "--max-new-tokens", "6", "--refresh", "3", "--save-plan", str(plan), "--no-stream",
                 "--quant", "none"]) == 0
    assert f"the re-selected one to {second}" in capsys.readouterr().err


def test_generate_refresh_every_and_dense_prefill_are_recorded_and_refused_without_re_selection(tiny_dir, capsys):
    base = ["generate", "hello", "--model", str(tiny_dir), "--keep", "0.5", "--compensate", "none",
            "--max-new-tokens", "9"]
    assert main(base + ["--refresh", "3", "--refresh-every", "--prefill", "dense", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["reselection"]["prefill"], out["reselection"]["mode"]) == ("dense", "every")
    assert not {"refresh", "refresh_after", "refresh_every", "prefill"} & set(out)  # (one JSON shape)
    assert main(base + ["--refresh", "3", "--refresh-every", "--json"]) == 0  # every R: dense-answer by default
    assert json.loads(capsys.readouterr().out)["reselection"]["prefill"] == "dense-answer"
    assert main(base + ["--refresh", "3", "--json"]) == 0  # once: pruned, as before
    out = json.loads(capsys.readouterr().out)
    assert (out["reselection"]["prefill"], out["reselection"]["mode"]) == ("pruned", "once")
    assert main(base + ["--refresh-every"]) == 2  # the tiny model's selector does not re-select by default
    assert "refresh_every re-selects after every R answer tokens" in capsys.readouterr().err
    assert main(["generate", "hello", "--model", str(tiny_dir), "--plan", "p.json", "--refresh-every"]) == 2
    assert "--refresh-every would be ignored" in capsys.readouterr().err


def test_eval_compare_takes_re_selection_and_prefill_per_selector_only(tiny_dir, capsys):
    for flag in (["--refresh", "4"], ["--refresh-every"], ["--no-refresh-every"], ["--prefill", "dense"]):
        assert main(["eval", "compare", "--model", str(tiny_dir), "--selectors", "griffin", *flag]) == 2
        assert "NAME+reselect-everyN, NAME+reselect-onceN, NAME+reselect-off or NAME+dense-prefill" in capsys.readouterr().err


def test_generate_records_compensation_and_none_is_plain(tiny_dir, tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog; 12 + 30 = 42.\n\n" * 30)
    base = ["generate", "hello", "--model", str(tiny_dir), "--keep", "0.5", "--max-new-tokens", "5", "--json",
            "--calibration", str(calib), "--calibration-tokens", "4096"]
    plan = tmp_path / "p.json"
    assert main(base + ["--save-plan", str(plan)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["compensation"]["mode"] == "calibration" and out["compensation"]["calibration"] == "calib.txt"
    assert json.loads(plan.read_text())["meta"]["compensation"]["mode"] == "calibration"
    assert main(base + ["--compensate", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["compensation"] == {"mode": "none"}
    assert main(base + ["--compensate", "prompt"]) == 0
    assert json.loads(capsys.readouterr().out)["compensation"]["mode"] == "prompt"


@pytest.mark.parametrize("extra,match", [
    (["--ridge", "0"], r"--ridge must be > 0"),
    (["--calibration-tokens", "10"], r"--calibration-tokens 10 is too few"),
    (["--calibration", "/nonexistent/c.txt"], r"calibration file not found"),
    (["--keep", "0"], r"keep ratio 0.0 is out of range"),
    (["--keep", "1.5"], r"keep ratio 1.5 is out of range"),
    (["--width", "0"], r"FFN width 0 is out of range: use 1..48"),
    (["--width", "49"], r"FFN width 49 is out of range: use 1..48"),
    (["--selector", "bogus"], r"unknown selector 'bogus'"),
    (["--max-new-tokens", "400"], r"exceeds the model's context of 256 tokens"),
])
def test_bad_flags_give_one_line_errors(tiny_dir, capsys, extra, match):
    rc = main(["generate", "hello", "--model", str(tiny_dir), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("ifprune: error:") and len(err.splitlines()) == 1
    assert __import__("re").search(match, err), err


def test_model_errors(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, OPTConfig

    opt = tmp_path / "opt"
    AutoModelForCausalLM.from_config(OPTConfig(vocab_size=128, hidden_size=16, ffn_dim=32, num_hidden_layers=2,
                                               num_attention_heads=2, word_embed_proj_dim=16)).save_pretrained(opt)
    tiny_tokenizer().save_pretrained(opt)
    cases = [
        (["--model", str(opt)], "unsupported architecture OPTForCausalLM"),
        (["--model", "no-such-org/no-such-model"], "not a local path"),
        (["--model", str(tmp_path / "x.gguf")], "GGUF file not found"),
    ]
    for extra, match in cases:
        assert main(["generate", "hello", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1, err
    assert main(["generate", "  "]) == 2
    assert "prompt is empty" in capsys.readouterr().err


def test_console_script_has_help_and_exits_non_zero_without_traceback(tiny_dir):
    exe = [sys.executable, "-m", "ifprune.cli"]
    help_out = subprocess.run([*exe, "generate", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "--keep" in help_out.stdout and "--json" in help_out.stdout
    bad = subprocess.run([*exe, "generate", "hi", "--model", str(tiny_dir), "--keep", "2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "keep ratio 2.0" in bad.stderr


def test_generate_with_a_trained_checkpoint(tmp_path, capsys):
    """--checkpoint picks the predictor, attaches its LLM change and defaults to the artifact's width."""
    import torch

    from ifprune.training.config import config_from_dict
    from ifprune.training.data_sft import SFTExample
    from ifprune.training.loop import train

    model_dir = tmp_path / "base"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    from ifprune.core.loading import load_model

    lm = load_model(model_dir)
    examples = [SFTExample("math", f"add {a} and {b}", f"{a + b}") for a in range(4) for b in range(3)]
    cfg = config_from_dict(dict(stage="sft", method="predictor", keep=0.25, llm="lora", lora_r=4, steps=2,
                                batch_size=4, warmup_steps=0, prior="magnitude", checkpoint_every=2,
                                progress=False, output_dir=str(tmp_path / "run"),
                                data={"max_seq_len": 64, "max_prompt_tokens": 32}))
    torch.manual_seed(0)
    train(cfg, lm=lm, sft_data=examples)
    art = tmp_path / "run" / "artifact"
    assert main(["generate", "add 1 and 2", "--model", str(model_dir), "--checkpoint", str(art),
                 "--max-new-tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selector"] == "predictor" and out["ffn_width"] == 12
    other = tmp_path / "other"
    tiny_model("llama", seed=5).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    assert main(["generate", "hi", "--model", str(other), "--checkpoint", str(art)]) == 2
    assert "was trained on base model" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--keep", "0.5"], ["--selector", "griffin"], ["--width", "8"], ["--task", "math"]])
def test_generate_plan_with_a_conflicting_selection_flag_is_an_error(tiny_dir, tmp_path, capsys, extra):
    plan = tmp_path / "plan.json"
    assert main(["generate", "hello", "--model", str(tiny_dir), "--width", "10", "--max-new-tokens", "2",
                 "--save-plan", str(plan), "--no-stream"]) == 0
    capsys.readouterr()
    assert main(["generate", "hello", "--model", str(tiny_dir), "--plan", str(plan), *extra]) == 2
    err = capsys.readouterr().err
    assert f"--plan fixes the channels, so {extra[0]} would be ignored" in err and "Traceback" not in err


def test_generate_plan_runs_the_base_weights_and_says_so(tiny_dir, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["generate", "hello", "--model", str(tiny_dir), "--width", "10", "--max-new-tokens", "2",
                 "--save-plan", str(plan), "--no-stream"]) == 0
    capsys.readouterr()
    assert main(["generate", "hello", "--model", str(tiny_dir), "--plan", str(plan), "--max-new-tokens", "2",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == {"model": str(tiny_dir), "tuned_by": None} and out["ffn_width"] == 10


def test_export_refuses_an_existing_out_before_loading_the_model(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep me")
    assert main(["export", "--task", "math", "--out", str(out), "--model", str(tmp_path / "no-such-model")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err  # not the missing model: checked first
    assert (out / "x").read_text() == "keep me"


def test_default_threads_leave_busy_cpus_alone():
    from ifprune.commands.common import default_threads, set_threads

    assert default_threads(cpus=2, load=0.0) == 2
    assert default_threads(cpus=2, load=1.1) == 1  # another job on one core: one thread, not two
    assert default_threads(cpus=2, load=7.0) == 1  # never fewer than one
    assert default_threads(cpus=16, load=3.4) == 13
    assert default_threads(cpus=4, load=-1.0) == 4  # never more than the CPUs
    import torch

    before = torch.get_num_threads()
    try:
        assert set_threads(None) == torch.get_num_threads() >= 1
        assert set_threads(1) == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_keep_other_than_the_artifacts_width_warns(caplog):
    import argparse
    import logging
    from pathlib import Path
    from types import SimpleNamespace

    from ifprune.commands.common import resolve_width
    from ifprune.core.tiny import tiny_lm

    lm = tiny_lm("llama")
    sel = SimpleNamespace(artifact=SimpleNamespace(config={"width": 24}, path=Path("/x/my-artifact")))
    args = argparse.Namespace(keep=None, width=None, selector="predictor", checkpoint="/x/my-artifact")
    with caplog.at_level(logging.WARNING, logger="ifprune"):
        assert resolve_width(args, lm, sel) == 24
    assert "untested" not in caplog.text
    args.keep = 0.25
    with caplog.at_level(logging.WARNING, logger="ifprune"):
        assert resolve_width(args, lm, sel) == 12
    assert "my-artifact was trained at width 24 of 48; running it at 12 is untested" in caplog.text


def test_cache_list_and_clear(tmp_path, monkeypatch, capsys):
    """`ifprune cache list` shows each entry and its size; `clear` removes only with --yes, never follows a link."""
    from ifprune.cli import main

    root = tmp_path / "cache"
    (root / "gguf" / "model-abc").mkdir(parents=True)
    (root / "gguf" / "model-abc" / "model.safetensors").write_bytes(b"x" * 2000)
    (root / "moments").mkdir()
    (root / "moments" / "s.safetensors").write_bytes(b"y" * 10)
    outside = tmp_path / "mine"
    outside.mkdir()
    (outside / "keep.txt").write_text("theirs")
    (root / "moments" / "link").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("IFPRUNE_CACHE", str(root))
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "gguf/model-abc" in out and "2.0 kB" in out and "3 entries" in out
    assert main(["cache", "clear", "--kind", "moments"]) == 1  # without --yes: nothing goes
    assert (root / "moments" / "s.safetensors").exists()
    assert main(["cache", "clear", "--kind", "moments", "--yes"]) == 0
    assert not any((root / "moments").iterdir()) and (outside / "keep.txt").read_text() == "theirs"
    assert (root / "gguf" / "model-abc").is_dir()
    assert main(["cache", "list", "--kind", "nope"]) == 2
    assert "no cache kind 'nope'" in capsys.readouterr().err


def test_a_misspelt_flag_gets_the_subcommands_usage_and_a_suggestion(capsys):
    from ifprune.cli import main

    with pytest.raises(SystemExit) as e:
        main(["generate", "hi", "--kepp", "0.5"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: ifprune generate" in err and "did you mean --keep?" in err


@pytest.mark.parametrize("flags,msg", [(["--keep", "0"], "keep ratio 0.0 is out of range"),
                                       (["--keep", "1.5"], "keep ratio 1.5 is out of range")])
def test_a_bad_keep_is_refused_before_the_model_loads(monkeypatch, capsys, flags, msg):
    import ifprune.core.loading as loading
    from ifprune.cli import main

    def never(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load_model", never)
    assert main(["generate", "hi", *flags]) == 2
    assert msg in capsys.readouterr().err


def test_generate_answers_at_int8_by_default_and_none_turns_it_off(tiny_dir, capsys):
    base = ["generate", "hello", "--model", str(tiny_dir), "--keep", "0.5", "--max-new-tokens", "3", "--json"]
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["runtime"] == {"engine": "torch", "weights": "int8"}
    assert main(base + ["--quant", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"] == {"engine": "torch", "weights": None}
    assert main(base + ["--runtime", "llamacpp", "--quant", "none"]) == 2
    assert "--quant none is a weight type of the torch runtime" in capsys.readouterr().err

