import logging

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.loading import cached_model_dir, load_model
from ifprune.core.tiny import tiny_model, tiny_tokenizer


def build_tiny():
    return tiny_model("llama"), tiny_tokenizer()


def test_cache_entry_is_built_once_then_reused(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return build_tiny()

    entry = tmp_path / "entry"
    assert cached_model_dir(entry, build, "src") == entry
    assert cached_model_dir(entry, build, "src") == entry
    assert len(calls) == 1
    lm = load_model(entry)
    ref = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(lm.model(ids).logits, ref(ids).logits)


def _edit_json(path, **kw):
    import json

    obj = json.loads(path.read_text())
    obj.update(kw)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest", "config", "eps", "tokenizer", "template",
                                    "extra", "weights_outside"])
def test_corrupt_cache_entry_is_rebuilt_not_trusted(tmp_path, caplog, damage):
    entry = tmp_path / "entry"
    cached_model_dir(entry, build_tiny, "src")
    weights = entry / "model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "manifest":
        (entry / "ifprune-cache.json").write_text("{not json")
    elif damage == "config":
        (entry / "config.json").write_text("{broken")
    elif damage == "eps":  # still valid JSON, silently different maths
        _edit_json(entry / "config.json", rms_norm_eps=0.5)
    elif damage == "tokenizer":
        (entry / "tokenizer.json").write_bytes((entry / "tokenizer.json").read_bytes()[:50])
    elif damage == "template":
        _edit_json(entry / "tokenizer_config.json", chat_template="{{ 'pwned' }}")
    elif damage == "extra":
        (entry / "other.safetensors").write_bytes(b"x")
    else:
        (tmp_path / "evil.safetensors").write_bytes(weights.read_bytes())
        _edit_json(entry / "ifprune-cache.json", weights="../evil.safetensors")
    calls = []

    def build():
        calls.append(1)
        return build_tiny()

    with caplog.at_level(logging.WARNING, logger="ifprune.core.loading"):
        cached_model_dir(entry, build, "src")
    assert calls == [1] and "corrupt" in caplog.text
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(load_model(entry).model(ids).logits, tiny_model("llama")(ids).logits)


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(IfpruneError, match="not a local path and is not in the Hugging Face cache"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(IfpruneError, match="GGUF file not found"):
        load_model(tmp_path / "missing.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IfpruneError, match="cannot load a causal LM from"):
        load_model(tmp_path / "empty")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(IfpruneError, match="cannot read GGUF file"):
        load_model(bad, use_cache=False)


def test_a_truncated_or_incomplete_model_directory_is_refused_not_run_with_random_weights(tmp_path):
    import os

    from safetensors.torch import load_file, save_file

    from ifprune.core.plan import Plan
    from ifprune.core.tiny import tiny_lm
    from ifprune.export.checkpoint import export_plan

    lm = tiny_lm("llama")
    for name in ("cut", "holes"):
        export_plan(lm, Plan.dense(lm.num_layers, lm.d_ffn), tmp_path / name)
    w = tmp_path / "cut" / "model.safetensors"
    os.truncate(w, w.stat().st_size // 2)
    with pytest.raises(IfpruneError, match="unreadable.*truncated or corrupt"):
        load_model(tmp_path / "cut")
    w = tmp_path / "holes" / "model.safetensors"
    save_file({k: v for k, v in load_file(str(w)).items() if "q_proj" not in k}, str(w), metadata={"format": "pt"})
    with pytest.raises(IfpruneError, match="2 weight.s. are missing.*would be random"):
        load_model(tmp_path / "holes")


@pytest.mark.parametrize("valid", [True, False])
def test_a_symlinked_cache_entry_is_replaced_never_followed(tmp_path, caplog, valid):
    """A cache entry that is a link (to a valid entry elsewhere, or to any folder) is removed and rebuilt in place;
    the link's target is left as it was (issue: one symlink broke every later command)."""
    target = tmp_path / "elsewhere"
    if valid:
        cached_model_dir(target, build_tiny, "src")
    else:
        target.mkdir()
        (target / "keep.txt").write_text("mine")
    before = sorted(p.name for p in target.iterdir())
    entry = tmp_path / "cache" / "entry"
    entry.parent.mkdir()
    entry.symlink_to(target, target_is_directory=True)
    calls = []

    def build():
        calls.append(1)
        return build_tiny()

    with caplog.at_level(logging.WARNING, logger="ifprune"):
        assert cached_model_dir(entry, build, "src") == entry
    assert calls == [1] and "symbolic link" in caplog.text
    assert entry.is_dir() and not entry.is_symlink() and sorted(p.name for p in target.iterdir()) == before
    assert cached_model_dir(entry, build, "src") == entry and calls == [1]  # the rebuilt entry is reused


def test_a_checkpoint_that_would_not_fit_is_refused_before_loading(tmp_path, monkeypatch):
    from ifprune.core import loading, memory

    (tmp_path / "config.json").write_text('{"model_type": "llama", "dtype": "bfloat16"}')
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4000)
    monkeypatch.setattr(memory, "available_bytes", lambda: 5000)
    monkeypatch.setattr(loading, "_from_pretrained", lambda *a, **k: pytest.fail("it loaded"))
    with pytest.raises(IfpruneError, match=r"loading .* in float32 needs 0.0 GB .*--dtype bfloat16"):
        loading.load_model(tmp_path, dtype="float32")
    # in its own dtype (auto) it fits
    monkeypatch.setattr(loading, "_from_pretrained", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("loads")))
    with pytest.raises(RuntimeError, match="loads"):
        loading.load_model(tmp_path)


def test_auto_dtype_keeps_bfloat16_checkpoints_and_runs_the_rest_in_float32():
    from ifprune.core.loading import auto_dtype

    assert auto_dtype(torch.bfloat16, gguf=False) == torch.bfloat16
    assert auto_dtype(torch.float16, gguf=False) == auto_dtype(None, gguf=False) == torch.float32
    assert auto_dtype(torch.bfloat16, gguf=True) == torch.float32  # a quantised GGUF dequantised


def test_the_scaling_shapes_write_checkpoints_that_load_in_their_own_dtype(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tiny_tokenizer().save_pretrained(str(tmp_path / "tok"))
    subprocess.run([sys.executable, "benchmarks/make_shapes.py", "--shape", "tiny", "--out", str(tmp_path / "m"),
                    "--tokenizer", str(tmp_path / "tok")], check=True, cwd=root, capture_output=True)
    assert not (tmp_path / "m.partial").exists()
    lm = load_model(tmp_path / "m")
    assert next(lm.model.parameters()).dtype == torch.bfloat16  # auto: no float32 copy of a bf16 checkpoint
    assert (lm.num_layers, lm.d_ffn) == (2, 128)
    assert next(load_model(tmp_path / "m", dtype="float32").model.parameters()).dtype == torch.float32
