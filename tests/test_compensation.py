"""Output compensation: the refit's maths, its parity with an independent reference, its effect on
the layer's output error, the statistics cache, and every bad input."""

import copy
import json
import warnings

import pytest
import torch

from ifprune.compensation.calibration import (
    CompensationConfig, Compensator, calibration_rows, collect_moments, compensate, down_weight, layer_stats,
    moments_precision, stats_path,
)
from ifprune.compensation.refit import Moments, output_error, refit_down
from ifprune.core.errors import IfpruneError
from ifprune.core.ffn import Conv1D, discover
from ifprune.core.hooks import record_intermediates
from ifprune.core.plan import Plan
from ifprune.core.tiny import TINY_ARCHS, tiny_lm

TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
        "How vexingly quick daft zebras jump; 12 + 30 = 42. def f(x): return x * 2\n\n") * 12


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IFPRUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def calib(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(TEXT)
    return path


def _plan(lm, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), width)


def _cfg(calib, **kw):
    return CompensationConfig(calibration=str(calib), max_tokens=4096, seq_len=128, **kw)


def _compensated_compact(lm, calib, width=20):
    """(lm in float64, its compensator, a plan of `width`, the compact model loaded with that plan's refit)."""
    lm.model.double()
    lm._fingerprint = None
    comp = compensate(lm, _cfg(calib), progress=False)
    plan = _plan(lm, width)
    compact = lm.compact(width)
    compact.load(plan)
    return lm, comp, plan, compact


def reference_model(lm, plan, refits):
    """Independent of the compact path: a full-width copy whose down projection is the refit on the
    kept columns and zero on the others (and the refit bias)."""
    ref = copy.deepcopy(lm.model)
    layout = discover(ref)
    with torch.no_grad():
        for layer, keep, (W_s, b_s) in zip(layout.layers, plan.indices, refits):
            W = torch.zeros_like(down_weight(layer)[0])
            W[:, keep] = W_s
            layer.down.weight.copy_(W.T if isinstance(layer.down, Conv1D) else W)
            if b_s is not None:
                layer.down.bias.copy_(b_s)
    return ref


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_compact_refit_equals_reference_for_every_family(arch, calib):
    lm, comp, plan, compact = _compensated_compact(tiny_lm(arch, layers=2), calib)
    ref = reference_model(lm, plan, comp.refit(plan))
    ids = torch.randint(7, 100, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want, plain = compact.model(ids).logits, ref(ids).logits, None
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    lm.set_compensator(None)
    plain_compact = lm.compact(20)
    plain_compact.load(plan)
    with torch.no_grad():
        plain = plain_compact.model(ids).logits
    assert not torch.allclose(plain, got, atol=1e-4), "the refit must change the compact model"


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt_neox", "gpt2"])
def test_refit_lowers_the_layer_output_error_on_calibration_activations(arch, calib):
    lm = tiny_lm(arch, layers=2)
    rows = calibration_rows(lm.tokenizer, calib, 4096, 128)
    stats = layer_stats(lm, _cfg(calib), progress=False)
    acts: dict[int, list] = {}
    with torch.no_grad(), record_intermediates(lm.layout, lambda i, x: acts.setdefault(i, []).append(x.reshape(-1, x.shape[-1]))):
        for r in rows:
            lm.model(r.unsqueeze(0))
    plan = _plan(lm, 16, seed=1)
    for i, layer in enumerate(lm.layout.layers):
        W, b = down_weight(layer)
        keep = plan.indices[i]
        W_s, b_s = refit_down(W, b, stats.G[i], stats.mean[i], keep, 1e-3)
        h = torch.cat(acts[i])
        assert output_error(W, b, W_s, b_s, h, keep) < 0.9 * output_error(W, b, W[:, keep], b, h, keep)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_keeping_every_channel_gives_the_original_weights_exactly(arch, calib):
    lm = tiny_lm(arch, layers=2)
    stats = layer_stats(lm, _cfg(calib), progress=False)
    for i, layer in enumerate(lm.layout.layers):
        W, b = down_weight(layer)
        W_s, b_s = refit_down(W, b, stats.G[i], stats.mean[i], torch.arange(lm.d_ffn), 1e-2)
        assert torch.equal(W_s, W) and (b is None or torch.equal(b_s, b))


def test_ridge_pulls_toward_the_original_weights(calib):
    lm = tiny_lm("llama", layers=2)
    stats = layer_stats(lm, _cfg(calib), progress=False)
    W, _ = down_weight(lm.layout.layers[0])
    keep = _plan(lm, 16).indices[0]
    far = (refit_down(W, None, stats.G[0], stats.mean[0], keep, 1e-4)[0] - W[:, keep]).norm()
    near = (refit_down(W, None, stats.G[0], stats.mean[0], keep, 1e4)[0] - W[:, keep]).norm()
    assert near < 1e-2 * far


def test_moments_weights_drop_padding():
    m, ref = Moments.zeros(3), Moments.zeros(3)
    x = torch.randn(2, 4, 3)
    m.add(x, torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]))
    ref.add(torch.cat([x[0, :3], x[1, :2]]))
    assert m.count == ref.count == 5
    torch.testing.assert_close(m.second_moment(), ref.second_moment())


def test_bf16_rows_sum_in_float32_close_to_float32_rows():
    x, w = torch.randn(3, 256, 64), (torch.rand(3, 256) > 0.2).float()
    ref, m = Moments.zeros(64), Moments.zeros(64)
    ref.add(x, w)
    m.add(x.bfloat16(), w)
    assert m.outer.dtype == torch.float32 and m.count == ref.count
    assert float((m.second_moment() - ref.second_moment()).norm() / ref.second_moment().norm()) < 0.01
    torch.testing.assert_close(m.mean(), ref.mean(), atol=0.01, rtol=0.01)


def test_striped_upper_products_equal_the_full_product(monkeypatch):
    x, w = torch.randn(2, 50, 70, dtype=torch.float64).float(), (torch.rand(2, 50) > 0.3).float()
    ref = Moments.zeros(70)
    ref.add(x, w)
    monkeypatch.setattr(Moments, "STRIPE", 16)  # 4 stripes of 17-18 columns
    m = Moments.zeros(70)
    m.add(x, w)
    m.add(x[:1], w[:1])
    assert not m.mirrored
    rows = x.reshape(-1, 70)[w.reshape(-1) > 0]
    full = rows.T @ rows + x[0][w[0] > 0].T @ x[0][w[0] > 0]
    torch.testing.assert_close(m.second_moment() * m.count, full, rtol=1e-5, atol=1e-4)
    assert m.mirrored
    torch.testing.assert_close(m.outer, m.outer.T)
    torch.testing.assert_close(ref.second_moment() * ref.count, rows.T @ rows, rtol=1e-5, atol=1e-4)


def test_bf16_moments_are_close_to_native_and_recorded(calib):
    lm = tiny_lm("llama", layers=2)
    rows = calibration_rows(lm.tokenizer, calib, 2048, 128)
    native = torch.stack([m.second_moment() for m in collect_moments(lm, rows, progress=False)])
    bf16 = torch.stack([m.second_moment() for m in collect_moments(lm, rows, progress=False, precision="bf16")])
    assert not torch.equal(native, bf16)  # the passes did run in bf16
    assert float((bf16 - native).norm() / native.norm()) < 0.05
    stats = layer_stats(lm, _cfg(calib), progress=False)
    assert stats.precision == moments_precision(lm)
    path = stats_path(lm.fingerprint(), stats.calibration_sha, 4096, 128)
    assert json.loads((path / "manifest.json").read_text())["precision"] == stats.precision
    lm.model.double()
    assert moments_precision(lm) == "native"


def test_statistics_are_cached_and_a_corrupt_cache_is_rebuilt(calib):
    lm = tiny_lm("llama", layers=2)
    cfg = _cfg(calib)
    first = layer_stats(lm, cfg, progress=False)
    path = stats_path(lm.fingerprint(), first.calibration_sha, cfg.max_tokens, cfg.seq_len)
    assert path.is_dir() and (path / "manifest.json").is_file() and (path / "layer-001.safetensors").is_file()
    again = layer_stats(lm, cfg, progress=False)
    torch.testing.assert_close(again.G, first.G, rtol=2e-3, atol=1e-6)  # read back from float16 correlations
    assert torch.equal(again.G, layer_stats(lm, cfg, progress=False).G)  # and deterministically so
    layer = path / "layer-001.safetensors"
    raw = bytearray(layer.read_bytes())
    raw[-8:] = b"\x00" * 8
    layer.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum mismatch in layer-001"):
        rebuilt = layer_stats(lm, cfg, progress=False)
    torch.testing.assert_close(rebuilt.G, first.G)
    (path / "layer-000.safetensors").unlink()
    with pytest.warns(UserWarning, match="unusable"):
        layer_stats(lm, cfg, progress=False)  # a missing layer: rebuilt, never half-read
    man = path / "manifest.json"
    man.write_text("{not json")
    with pytest.warns(UserWarning, match="unusable"):
        layer_stats(lm, cfg, progress=False)
    info = json.loads(man.read_text())
    info["fingerprint"] = "0123456789abcdef"
    man.write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="not of this model"):
        layer_stats(lm, cfg, progress=False)


def test_statistics_of_another_model_are_refused(calib):
    a, b = tiny_lm("llama", layers=2, seed=0), tiny_lm("llama", layers=2, seed=1)
    stats = layer_stats(a, _cfg(calib), progress=False)
    with pytest.raises(IfpruneError, match="other weights"):
        b.set_compensator(Compensator(a, _cfg(calib), stats))


def test_too_little_calibration_text_names_how_much_is_needed(tmp_path):
    lm = tiny_lm("llama", layers=2)
    short = tmp_path / "short.txt"
    short.write_text("a few words only")
    with pytest.raises(IfpruneError, match=r"gives \d+ tokens; this model needs at least 96"):
        layer_stats(lm, _cfg(short), progress=False)
    with pytest.raises(IfpruneError, match="calibration file not found"):
        layer_stats(lm, _cfg(tmp_path / "missing.txt"), progress=False)


def test_bad_settings_are_refused():
    with pytest.raises(IfpruneError, match="unknown compensation mode"):
        CompensationConfig(mode="sometimes")
    with pytest.raises(IfpruneError, match="--ridge must be > 0"):
        CompensationConfig(ridge=0.0)
    with pytest.raises(IfpruneError, match="--ridge must be > 0"):
        CompensationConfig(ridge=float("nan"))
    with pytest.raises(IfpruneError, match="too few"):
        CompensationConfig(max_tokens=10)


def test_ill_conditioned_statistics_warn_and_still_solve():
    W = torch.randn(4, 6)
    G = -torch.eye(6)  # not positive semi-definite (broken moments): Cholesky fails even with the ridge
    with pytest.warns(UserWarning, match="ill-conditioned"):
        W_s, _ = refit_down(W, None, G, torch.zeros(6), torch.tensor([0, 2, 4]), 1e-2)
    assert torch.isfinite(W_s).all()


def test_compensation_none_reproduces_plain_gathering(calib):
    lm = tiny_lm("llama", layers=2)
    plan = _plan(lm, 20)
    compact = lm.compact(20)
    compact.load(plan)
    plain = [b.clone() for pairs in compact._pairs for _, b in pairs]
    assert compensate(lm, "none") is None and lm.compensator is None
    again = lm.compact(20)
    again.load(plan)
    assert all(torch.equal(x, y) for x, (_, y) in zip(plain, [p for pairs in again._pairs for p in pairs]))


def test_refits_are_cached_per_plan(calib):
    lm = tiny_lm("llama", layers=2)
    comp = compensate(lm, _cfg(calib), progress=False)
    compact = lm.compact(20)
    a, b = _plan(lm, 20, 0), _plan(lm, 20, 1)
    compact.load(a)
    first = comp.last_refit_s
    compact.load(b)
    compact.load(a)  # back to a: the refit comes from the per-plan cache
    assert first > 0 and comp.last_refit_s == 0.0
    assert compact.load(a) == 0.0  # already loaded: no-op


def test_prompt_mode_depends_on_the_prompt(calib):
    from ifprune.compensation.calibration import prompt_moments
    from ifprune.core.prompting import encode_prompt

    lm = tiny_lm("llama", layers=2)
    comp = compensate(lm, _cfg(calib, mode="prompt", prompt_weight=0.5), progress=False)
    plan = _plan(lm, 20)
    p1 = prompt_moments(lm, encode_prompt(lm.tokenizer, "write a sonnet about the sea"))
    p2 = prompt_moments(lm, encode_prompt(lm.tokenizer, "12 + 30 = ?"))
    r1, r2, r0 = comp.refit(plan, p1), comp.refit(plan, p2), comp.refit(plan, None)
    assert not torch.allclose(r1[0][0], r2[0][0]) and not torch.allclose(r1[0][0], r0[0][0])


def test_shrink_is_the_refit_under_the_shrunk_moment():
    g = torch.Generator().manual_seed(0)
    W, H = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(50, 8, generator=g, dtype=torch.float64)
    G, mu, keep = H.T @ H / 50, H.mean(0), torch.tensor([1, 3, 4, 6])
    a = 0.3
    shrunk = (1 - a) * G + a * torch.diag(G.diagonal())
    got, _ = refit_down(W, None, G, mu, keep, 1e-3, dtype=torch.float64, shrink=a)
    want, _ = refit_down(W, None, shrunk, mu, keep, 1e-3, dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_reconstruct_then_the_full_down_projection_is_the_refit():
    """Training under compensated plans feeds W x_hat; inference runs W'_S x_S: the same, per example."""
    from ifprune.compensation.refit import reconstruct

    g = torch.Generator().manual_seed(0)
    d, k, hidden = 24, 10, 16
    H = torch.randn(400, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    G = H.T @ H / H.shape[0]
    W = torch.randn(hidden, d, generator=g, dtype=torch.float64)
    keep = torch.stack([torch.randperm(d, generator=g)[:k].sort().values for _ in range(3)])  # [B, k]
    x = torch.randn(3, 5, d, generator=g, dtype=torch.float64)
    got = reconstruct(x, keep, G, 1e-2).double() @ W.T
    for b in range(3):
        W_s, _ = refit_down(W, None, G, G.diagonal() * 0, keep[b], 1e-2, dtype=torch.float64)
        torch.testing.assert_close(got[b], x[b][:, keep[b]] @ W_s.T, rtol=1e-5, atol=1e-5)
    # channels outside the plan are not read, and keeping every channel is the identity
    noisy = x.clone()
    for b in range(3):
        out = torch.ones(d, dtype=torch.bool)
        out[keep[b]] = False
        noisy[b][:, out] = 1e3
    torch.testing.assert_close(reconstruct(noisy, keep, G, 1e-2), reconstruct(x, keep, G, 1e-2))
    assert reconstruct(x, torch.arange(d).expand(3, d), G, 1e-2) is x
    # differentiable in the activation (so in the mask values that scale it)
    xr = x.clone().requires_grad_(True)
    reconstruct(xr, keep, G, 1e-2).sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0


def test_masked_ffn_with_compensation_equals_the_compensated_compact_model(calib):
    """The training forward (hard masks, reconstruct in the hook) computes what the compact model with
    the refit computes at inference, given the same statistics."""
    from ifprune.compensation.refit import reconstruct
    from ifprune.core.hooks import MaskedFFN

    lm, comp, plan, compact = _compensated_compact(tiny_lm("llama", layers=2), calib)
    ids = torch.randint(7, 100, (1, 13), generator=torch.Generator().manual_seed(3))
    G = comp.ensure_stats().G
    masks = torch.zeros(lm.num_layers, lm.d_ffn, dtype=torch.float64)
    masks.scatter_(-1, plan.indices.long(), 1.0)
    masked = MaskedFFN(lm.layout, compensate=lambda i, x, keep: reconstruct(x, keep, G[i], comp.config.ridge))
    with torch.no_grad():
        want = compact.model(ids).logits
        with masked.apply(masks):
            got = lm.model(ids).logits
        masked.compensate = None
        with masked.apply(masks):
            plain = lm.model(ids).logits
    uneven = masks.clone()
    uneven[0, int(plan.indices[0, 0])] = 0.0  # layer 0 keeps one channel fewer than layer 1
    masked.compensate = lambda i, x, keep: reconstruct(x, keep, G[i], comp.config.ridge)
    with pytest.raises(IfpruneError, match="same number of channels"), torch.no_grad(), \
            masked.apply(torch.stack([masks, uneven])):
        lm.model(ids.expand(2, -1))
    masked.remove()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # both solve in float32
    assert not torch.allclose(plain, want, atol=1e-4)


def test_linked_statistics_are_removed_never_read(tmp_path, caplog):
    """Statistics whose file or manifest is a symlink are not trusted: the links go, the targets stay, and the
    caller recomputes (None)."""
    import logging

    from ifprune.compensation.calibration import LayerStats, read_stats, save_stats

    real = tmp_path / "real" / "s"
    stats = LayerStats(torch.eye(4).repeat(2, 1, 1), torch.zeros(2, 4), 10, "fp", "sha", "native")
    save_stats(stats, real)
    assert read_stats(real, "fp") is not None
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "s").symlink_to(real, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="ifprune"):
        assert read_stats(cache / "s", "fp") is None
    assert "symbolic link" in caplog.text and not any(cache.iterdir()) and (real / "manifest.json").is_file()
    # a layer file inside the folder that is a link: the whole entry is untrusted
    save_stats(stats, cache / "t")
    (cache / "t" / "layer-000.safetensors").unlink()
    (cache / "t" / "layer-000.safetensors").symlink_to(real / "layer-000.safetensors")
    with pytest.warns(UserWarning, match="checksum mismatch in layer-000"):
        assert read_stats(cache / "t", "fp") is None
    assert not (cache / "t").exists() and (real / "layer-000.safetensors").is_file()


def test_statistics_read_back_from_float16_refit_as_float32_does(calib):
    """The cache stores float16 correlations: a refit from them stays within 1e-3 (relative, Frobenius) of the
    refit from the float32 moments as summed; the first run (which wrote the cache), every later one (which reads
    it) and a run without the cache all use the same rounded numbers."""
    from ifprune.compensation.calibration import LayerStats, decode_layer, encode_layer

    lm = tiny_lm("llama", layers=2)
    cfg = _cfg(calib)
    ms = collect_moments(lm, calibration_rows(lm.tokenizer, calib, 4096, 128), progress=False,
                         precision=moments_precision(lm))
    computed = LayerStats(torch.stack([m.second_moment() for m in ms]), torch.stack([m.mean() for m in ms]).float(),
                          ms[0].count, lm.fingerprint(), "sha")
    first = layer_stats(lm, cfg, progress=False)  # writes the cache
    read = layer_stats(lm, cfg, progress=False)
    assert torch.equal(first.G, read.G) and torch.equal(read.G, layer_stats(lm, cfg, use_cache=False).G)
    plan = _plan(lm, 20)
    fits = []
    for stats in (computed, read):
        comp = Compensator(lm, cfg, stats=stats)
        fits.append(torch.stack([w for w, _ in comp.refit(plan)]))
    assert float((fits[1] - fits[0]).norm() / fits[0].norm()) < 1e-3
    # massive activations: a second moment past float16's range survives as correlations times scales
    h = torch.randn(512, 16) * torch.tensor([1e4] + [1e-3] * 15)
    G = h.T @ h / 512
    torch.testing.assert_close(decode_layer(**encode_layer(G), out=torch.empty(16, 16)), G, rtol=2e-3, atol=0)


def test_statistics_that_would_not_fit_in_memory_are_refused_first(calib, monkeypatch):
    from ifprune.compensation import calibration

    lm = tiny_lm("llama", layers=2)
    from ifprune.core import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    monkeypatch.setattr(calibration, "collect_moments", lambda *a, **k: pytest.fail("the pass ran"))
    with pytest.raises(IfpruneError, match=r"\(2 layers x \d+\^2 float32 moments\) needs .* GB.*--compensate mean .* or none"):
        layer_stats(lm, _cfg(calib), progress=False)


def test_statistics_the_disk_cannot_hold_are_refused_before_the_pass(calib, monkeypatch):
    from ifprune.compensation import calibration
    from ifprune.core import memory

    lm = tiny_lm("llama", layers=2)
    monkeypatch.setattr(memory, "free_disk_bytes", lambda path: 10)
    monkeypatch.setattr(calibration, "collect_moments", lambda *a, **k: pytest.fail("the pass ran"))
    with pytest.raises(IfpruneError, match=r"statistics \(moments\) for this model needs about .* IFPRUNE_CACHE"):
        layer_stats(lm, _cfg(calib), progress=False)


def test_a_refit_a_few_layers_at_a_time_equals_all_at_once(calib, monkeypatch):
    """Large models refit in chunks of layers (their k x k blocks would not fit at once): the same weights."""
    from ifprune.compensation.calibration import layer_chunks

    lm = tiny_lm("llama", layers=3)
    cfg = _cfg(calib)
    stats = layer_stats(lm, cfg, progress=False, use_cache=False)
    plan = _plan(lm, 20)
    whole = Compensator(lm, cfg, stats=stats).refit(plan)
    monkeypatch.setattr(Compensator, "REFIT_BYTES", 16 * 20 * 20)  # one layer per chunk
    assert layer_chunks(3, 20, Compensator.REFIT_BYTES) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    chunked = Compensator(lm, cfg, stats=stats).refit(plan)
    for (a, _), (c, _) in zip(whole, chunked):
        torch.testing.assert_close(a, c)


# mode "mean": the dropped channels' mean output as a bias, from means alone ---------------------------
def test_mean_mode_adds_the_dropped_channels_mean_output_as_a_bias(calib):
    lm = tiny_lm("llama", layers=2)
    compensate(lm, CompensationConfig(mode="mean", calibration=str(calib), max_tokens=1024, seq_len=128))
    stats = lm.compensator.ensure_stats()
    assert stats.G is None and stats.kind == "mean" and stats.tokens >= 1024
    # the means are those of the full moments pass
    full = collect_moments(lm, calibration_rows(lm.tokenizer, calib, 1024, 128), progress=False,
                           precision=stats.precision)
    torch.testing.assert_close(stats.mean, torch.stack([m.mean() for m in full]).float(), atol=1e-5, rtol=1e-4)
    plan = _plan(lm, 24)
    compact = lm.compact(24)
    compact.load(plan)
    for i, (fl, cl) in enumerate(zip(lm.layout.layers, compact.compact_layout.layers)):
        W = fl.down.weight.detach()
        dropped = torch.ones(lm.d_ffn, dtype=torch.bool)
        dropped[plan.indices[i].long()] = False
        torch.testing.assert_close(cl.down.bias, W[:, dropped] @ stats.mean[i][dropped], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(cl.down.weight, W[:, plan.indices[i].long()])  # gathered, not refit
    assert lm.compensator.describe()["mode"] == "mean" and "ridge" not in lm.compensator.describe()
    # the mean output is what the dropped channels add on average: closer to the full layer's output than none
    rows = calibration_rows(lm.tokenizer, calib, 1024, 128)
    compact.compensator = None
    compact.load(_plan(lm, 24, seed=1))  # another plan without a refit: no bias is left over from the last one
    assert all(cl.down.bias is None for cl in compact.compact_layout.layers)
    compensate(lm, "none")
    compact = lm.compact(24)
    compact.load(plan)
    with torch.no_grad():
        full_out, plain, biased = (lm.model(rows[0][None]).logits, compact.model(rows[0][None]).logits, None)
    compensate(lm, CompensationConfig(mode="mean", calibration=str(calib), max_tokens=1024, seq_len=128))
    compact = lm.compact(24)
    compact.load(plan)
    with torch.no_grad():
        biased = compact.model(rows[0][None]).logits
    assert float((biased - full_out).pow(2).mean()) < float((plain - full_out).pow(2).mean())


def test_mean_statistics_are_cached_apart_from_the_moments_and_rebuilt_when_corrupt(calib):
    lm = tiny_lm("llama", layers=2)
    cfg = CompensationConfig(mode="mean", calibration=str(calib), max_tokens=1024, seq_len=128)
    first = layer_stats(lm, cfg, progress=False)
    full = layer_stats(lm, CompensationConfig(calibration=str(calib), max_tokens=1024, seq_len=128), progress=False)
    assert full.G is not None and first.G is None
    path = stats_path(lm.fingerprint(), first.calibration_sha, 1024, 128, "mean")
    assert json.loads((path / "manifest.json").read_text())["kind"] == "mean"
    assert not (path / "layer-000.safetensors").read_bytes().count(b"corr")
    again = layer_stats(lm, cfg, progress=False)
    assert torch.equal(again.mean, first.mean)
    (path / "layer-001.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unusable"):
        rebuilt = layer_stats(lm, cfg, progress=False)
    assert torch.equal(rebuilt.mean, first.mean)


def test_mean_mode_refuses_an_architecture_without_a_place_for_the_bias():
    lm = tiny_lm("qwen2", layers=2)
    with pytest.raises(IfpruneError, match="no place for"):
        compensate(lm, "mean")
    assert lm.compensator is None


def test_mean_mode_adds_to_a_native_down_bias(calib):
    lm = tiny_lm("gpt2", layers=2)
    compensate(lm, CompensationConfig(mode="mean", calibration=str(calib), max_tokens=1024, seq_len=128))
    plan = _plan(lm, 24)
    compact = lm.compact(24)
    compact.load(plan)
    stats = lm.compensator.stats
    for i, (fl, cl) in enumerate(zip(lm.layout.layers, compact.compact_layout.layers)):
        W, b = down_weight(fl)
        dropped = torch.ones(lm.d_ffn, dtype=torch.bool)
        dropped[plan.indices[i].long()] = False
        assert cl.down.bias is not fl.down.bias
        torch.testing.assert_close(cl.down.bias, b + W[:, dropped] @ stats.mean[i][dropped], atol=1e-6, rtol=1e-5)
    compact.compensator = None
    compact.load(_plan(lm, 24, seed=1))
    assert all(cl.down.bias is fl.down.bias for fl, cl in zip(lm.layout.layers, compact.compact_layout.layers))
