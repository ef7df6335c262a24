"""Weight-only int8 / int4: error bounds, zeros kept (2:4 survives), int kernels match the
dequantizing reference, bad input refused."""

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.compress.quant import QuantizedWeight, QuantLinear, quantize, quantize_linears, swap_in_quant_linears
from ifprune.compress.sparsity import is_2_4, mask_2_4
from ifprune.core.tiny import tiny_model


@pytest.mark.parametrize("scheme,group", [("int8", 128), ("int4", 32), ("int4", 128)])
def test_round_to_nearest_error_is_at_most_half_a_step(scheme, group):
    w = torch.randn(48, 256)
    qw = quantize(w, scheme, group)
    step = qw.scales.repeat_interleave(qw.group_size, dim=1)
    assert ((qw.dequantize() - w).abs() <= step / 2 + 1e-6).all()
    assert qw.nbytes() < w.numel() * (1.1 if scheme == "int8" else 0.7)  # fp32 scales


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_zeros_stay_zero_so_2_4_survives(scheme):
    w = torch.randn(32, 128) * mask_2_4(torch.rand(32, 128))
    deq = quantize(w, scheme, 64).dequantize()
    assert is_2_4(deq) and bool((deq[w == 0] == 0).all())


@pytest.mark.parametrize("scheme,dtype,tol", [("int8", torch.float32, 1e-4), ("int4", torch.float32, 1e-4),
                                              ("int8", torch.bfloat16, 5e-2), ("int4", torch.bfloat16, 5e-2)])
def test_int_kernels_match_dequant_reference(scheme, dtype, tol):
    torch.manual_seed(0)
    w, b = torch.randn(64, 256), torch.randn(64)
    qw = quantize(w, scheme, 64)
    fast, ref = QuantLinear(qw, b), QuantLinear(qw, b, use_kernel=False)
    assert fast.kernel in ("int8pack", "int4pack-cpu") and ref.kernel == "dequant"
    x = torch.randn(3, 5, 256, dtype=dtype)
    got, want = fast(x).float(), ref(x.float())
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * want.abs().max().item())


def test_int4_kernel_falls_back_for_odd_rows():
    assert QuantLinear(quantize(torch.randn(8, 64), "int4", 32), None).kernel == "dequant"


def test_a_kernel_that_disagrees_or_fails_is_not_used(monkeypatch):
    qw = quantize(torch.randn(32, 64), "int8")
    assert "checked against the reference" in QuantLinear(qw, None).kernel_note
    real = torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda x, w, s: real(x, w, s) * 1.5)
    wrong = QuantLinear(qw, None)
    assert wrong.kernel == "dequant" and "disagrees with the reference" in wrong.kernel_note

    def refuse(*a):
        raise RuntimeError("Could not run '_weight_int8pack_mm' with arguments from this backend")

    monkeypatch.setattr(torch, "_weight_int8pack_mm", refuse)
    missing = QuantLinear(qw, None)
    assert missing.kernel == "dequant" and "int8pack unavailable: RuntimeError" in missing.kernel_note
    x = torch.randn(2, 64)
    torch.testing.assert_close(missing(x), x @ qw.dequantize().t())


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_model_with_quant_linears_matches_fake_quant_model(scheme):
    model = tiny_model("llama", hidden=64, d_ffn=64, layers=2)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    qws = quantize_linears(model, names, scheme, 32)
    ids = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
        used = swap_in_quant_linears(model, qws)
        got = model(ids).logits
    assert sum(used.values()) == len(names)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_bad_input_is_refused():
    with pytest.raises(IfpruneError, match="group size"):
        quantize(torch.randn(8, 96), "int4", 64)
    with pytest.raises(IfpruneError, match="not supported"):
        quantize(torch.randn(8, 96), "int4", 48)
    with pytest.raises(IfpruneError, match="unknown quantization"):
        quantize(torch.randn(8, 96), "int3")
    with pytest.raises(IfpruneError, match="floating point"):
        quantize(torch.ones(8, 96, dtype=torch.int8), "int8")


def test_mismatched_tensors_are_refused():
    qw = quantize(torch.randn(16, 64), "int4", 32)
    t = qw.tensors("x")
    assert torch.equal(QuantizedWeight.from_tensors("x", qw.spec(), t).dequantize(), qw.dequantize())
    with pytest.raises(IfpruneError, match="does not match"):
        QuantizedWeight.from_tensors("x", {**qw.spec(), "shape": [16, 128]}, t)
    with pytest.raises(IfpruneError, match="does not match"):
        QuantizedWeight.from_tensors("x", {**qw.spec(), "bits": 8}, t)
    with pytest.raises(IfpruneError, match="missing"):
        QuantizedWeight.from_tensors("y", qw.spec(), t)
    bad = dict(t)
    bad["x.qscales"] = bad["x.qscales"].clone()
    bad["x.qscales"][0, 0] = float("nan")
    with pytest.raises(IfpruneError, match="non-finite"):
        QuantizedWeight.from_tensors("x", qw.spec(), bad)
