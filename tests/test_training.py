"""Joint training on a tiny in-process model with an in-process character tokenizer (no downloads)."""

import json
import os
from pathlib import Path

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.loading import LoadedModel
from ifprune.selection.selectors import make_selector
from ifprune.core.tiny import tiny_model
from ifprune.selection.artifact import load_artifact
from ifprune.training.config import config_from_dict, load_config
from ifprune.training.data_sft import SFTExample, load_family, sft_splits, tokenize_sft
from ifprune.training.loop import Trainer, pretrain_batch, train

DATA = Path(os.environ.get("IFPRUNE_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'][0] }}:{{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<s>a:{% endif %}")
    return fast


def tiny_lm(seed=0):
    return LoadedModel(tiny_model("llama", seed=seed, vocab=128, d_ffn=48, layers=2), char_tokenizer(), f"tiny-llama-{seed}")


EXAMPLES = [SFTExample("math", f"add {a} and {b}", f"{a + b}") for a in range(4) for b in range(3)] + \
           [SFTExample("code", f"write def f{a}", f"def f{a}(): return {a}") for a in range(6)]


def base_cfg(tmp_path, **kw):
    cfg = dict(stage="sft", method="predictor", keep=0.5, llm="lora", lora_r=4, lr_predictor=1e-2, lr_llm=1e-2,
               warmup_steps=0, steps=12, batch_size=4, prior="griffin", prior_prompts=8, checkpoint_every=4,
               progress=False, output_dir=str(tmp_path / "run"), data={"max_seq_len": 64, "max_prompt_tokens": 32})
    cfg.update(kw)
    return config_from_dict(cfg)


def test_sft_loss_goes_down_and_predictor_masks_differ_by_prompt(tmp_path):
    torch.manual_seed(0)
    summary = train(base_cfg(tmp_path, steps=12), lm=tiny_lm(), sft_data=EXAMPLES)
    rows = [json.loads(line) for line in open(summary["log"])]
    assert len(rows) == 12
    first = sum(r["loss"] for r in rows[:4]) / 4
    last = sum(r["loss"] for r in rows[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    for r in rows:
        assert {"loss", "family_loss", "lr_predictor", "lr_llm", "mask_overlap", "lambda_mean"} <= set(r)
        assert 0 < r["lambda_mean"] <= 1
    # the artifact, on a fresh copy of the same base model, selects different channels for different prompts
    art = tmp_path / "run" / "artifact"
    assert json.loads((art / "config.json").read_text())["kind"] == "predictor"
    sel = make_selector("predictor", checkpoint=str(art))
    lm = tiny_lm()
    plans = {sel.select(lm, p, 24).hash for p in ("add 1 and 2", "write def f3", "zzzz qqq", "hello world")}
    assert len(plans) >= 2
    assert sel.select(lm, "add 1 and 2", 24).width == 24


def test_static_method_and_resume_gives_same_result(tmp_path):
    straight = train(base_cfg(tmp_path / "a", method="static", steps=4, checkpoint_every=2), lm=tiny_lm(),
                     sft_data=EXAMPLES)
    cfg = base_cfg(tmp_path / "b", method="static", steps=4, checkpoint_every=2)
    t = Trainer(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    t.cfg.steps = 2  # an interrupted run (the schedule was built for 4 steps)
    t.run()
    cfg.steps = 4
    resumed = train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    assert straight["steps"] == resumed["steps"] == 4
    a = load_artifact(tmp_path / "a" / "run" / "artifact").static.scores
    b = load_artifact(tmp_path / "b" / "run" / "artifact").static.scores
    torch.testing.assert_close(a, b, atol=1e-2, rtol=0)  # bf16-stored; same batches, same updates
    # static: every prompt gets the same plan
    sel = make_selector("predictor", checkpoint=str(tmp_path / "a" / "run" / "artifact"))
    lm = tiny_lm()
    assert sel.select(lm, "add 1 and 2", 24) == sel.select(lm, "write def f3", 24)


def test_pretrain_stage_chunks(tmp_path):
    cfg = base_cfg(tmp_path, stage="pretrain", steps=3, batch_size=2, data={"chunk_tokens": 8, "num_chunks": 4})
    blocks = torch.randint(4, 100, (6, 32))
    b = pretrain_batch(blocks[:1], cfg)
    assert b.input_ids.shape == (3, 32)
    for k in range(1, 4):  # example k-1: prefix of k+1 chunks, loss on chunk k+1 only, mask from chunk k
        row = b.labels[k - 1]
        assert (row[: k * 8] == -100).all() and torch.equal(row[k * 8: (k + 1) * 8], blocks[0, k * 8: (k + 1) * 8])
        assert b.attention_mask[k - 1].sum() == (k + 1) * 8
        assert torch.equal(b.pred_ids[k - 1], blocks[0, (k - 1) * 8: k * 8])
    summary = train(cfg, lm=tiny_lm(), pretrain_blocks=blocks)
    assert summary["steps"] == 3 and summary["tokens"] > 0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    lm = tiny_lm()
    cfg = base_cfg(tmp_path, steps=2, checkpoint_every=1)
    t = Trainer(cfg, lm=lm, sft_data=EXAMPLES)
    t.run()
    with torch.no_grad():  # poison a frozen base weight (not in the checkpoint) so step 3 is NaN
        lm.model.get_input_embeddings().weight.fill_(float("nan"))
    t.cfg.steps = 4
    with pytest.raises(IfpruneError, match=r"step 3.*last good checkpoint.*step 2"):
        t.run()
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2


@pytest.mark.parametrize("bad,match", [
    ({"foo": 1}, "unknown key"),
    ({"data": {"chunk_size": 3}}, "unknown key"),
    ({"lr_llm": -1e-4}, "lr_llm must be >= 0"),
    ({"keep": 1.5}, "keep 1.5 is out of range"),
    ({"stage": "rl"}, "stage must be"),
    ({"steps": "ten"}, "steps should be int"),
    ({"oracle_weight": -1.0}, "oracle_weight must be >= 0"),
    ({"method": "static", "oracle_weight": 1.0}, "method 'predictor' only"),
])
def test_bad_config(bad, match):
    with pytest.raises(IfpruneError, match=match):
        config_from_dict(bad)


def test_width_larger_than_d_ffn(tmp_path):
    with pytest.raises(IfpruneError, match="out of range"):
        Trainer(base_cfg(tmp_path, keep=None, width=100), lm=tiny_lm(), sft_data=EXAMPLES)


def test_config_file_errors(tmp_path):
    with pytest.raises(IfpruneError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "c.yaml"
    p.write_text("stage: sft\nlearning_rate: 1\n")
    with pytest.raises(IfpruneError, match="unknown key.*learning_rate"):
        load_config(p)
    p.write_text("stage: sft\nsteps: 3\n")
    assert load_config(p, {"data.max_seq_len": 99}).data.max_seq_len == 99
    p.write_text("stage: sft\nlr_llm: 5e-5\nlr_predictor: 1.5e-4\n")  # YAML 1.1 would read 5e-5 as a string
    cfg = load_config(p)
    assert (cfg.lr_llm, cfg.lr_predictor) == (5e-5, 1.5e-4)


def test_set_reads_exponent_floats():
    from ifprune.commands.train import _override

    assert _override("lr_llm=5e-5") == ("lr_llm", 5e-5)
    assert _override("output_dir=runs/x") == ("output_dir", "runs/x")


def test_missing_and_malformed_data(tmp_path):
    with pytest.raises(IfpruneError, match="data file not found"):
        load_family(tmp_path, "gsm8k")
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": oops}\n')
    with pytest.raises(IfpruneError, match=r"train.jsonl:2: malformed JSON"):
        load_family(tmp_path, "gsm8k")
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": "q"}\n')
    with pytest.raises(IfpruneError, match=r"train.jsonl:2: missing text field 'answer'"):
        load_family(tmp_path, "gsm8k")
    with pytest.raises(IfpruneError, match="unknown task family"):
        load_family(tmp_path, "poetry")


def test_artifact_refuses_another_base_model(tmp_path):
    train(base_cfg(tmp_path, steps=1), lm=tiny_lm(), sft_data=EXAMPLES)
    sel = make_selector("predictor", checkpoint=str(tmp_path / "run" / "artifact"))
    with pytest.raises(IfpruneError, match="was trained on base model"):
        sel.select(tiny_lm(seed=1), "add 1 and 2", 24)
    with pytest.raises(IfpruneError, match="no trained artifact"):
        make_selector("predictor", checkpoint=str(tmp_path))
    with pytest.raises(IfpruneError, match="needs a trained artifact"):
        make_selector("predictor")


def test_sft_tokenization_masks_the_prompt():
    tok = char_tokenizer()
    t = tokenize_sft(tok, SFTExample("math", "add 1 and 2", "3"), max_seq_len=64, max_prompt_tokens=32)
    assert tok.decode(t.input_ids[t.labels != -100]) == "3</s>"
    assert tok.decode(t.input_ids[t.labels == -100]).endswith("<s>a:")


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not present")
def test_skip_per_family_reads_exactly_the_examples_a_smaller_run_could_not():
    first, val = sft_splits(DATA, ["gsm8k", "mbpp"], max_per_family=300, val_per_family=24)
    later, val2 = sft_splits(DATA, ["gsm8k", "mbpp"], max_per_family=300, val_per_family=24, skip_per_family=300)
    both, _ = sft_splits(DATA, ["gsm8k", "mbpp"], max_per_family=600, val_per_family=24)
    key = lambda es: {(e.family, e.prompt) for e in es}  # noqa: E731
    assert val == val2 and not key(first) & key(later) and key(first) | key(later) == key(both)
    assert len([e for e in later if e.family == "gsm8k"]) == 300  # mbpp has 350: only 50 left past 300
    assert len([e for e in later if e.family == "mbpp"]) == 50
    with pytest.raises(IfpruneError, match="skip_per_family must be >= 0"):
        config_from_dict({"data": {"skip_per_family": -1}})


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not present")
def test_a_second_validation_slice_is_disjoint_from_the_first(tmp_path):
    from ifprune.training.data_sft import write_validation

    fams = ["gsm8k", "mbpp"]
    write_validation(tmp_path / "a.jsonl", DATA, fams, val_per_family=3)
    write_validation(tmp_path / "b.jsonl", DATA, fams, val_per_family=6, first=3)
    write_validation(tmp_path / "all.jsonl", DATA, fams, val_per_family=6)
    rows = {n: [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()] for n in ("a", "b", "all")}
    key = lambda rs: {(r["family"], r["prompt"]) for r in rs}  # noqa: E731
    assert len(rows["b"]) == 6 and not key(rows["a"]) & key(rows["b"]) and key(rows["a"]) | key(rows["b"]) == key(rows["all"])
    assert not {r["id"] for r in rows["a"]} & {r["id"] for r in rows["b"]}
    with pytest.raises(IfpruneError, match="--first must be in"):
        write_validation(tmp_path / "c.jsonl", DATA, fams, val_per_family=3, first=3)


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not present")
def test_unread_examples_are_none_a_run_ending_there_could_read(tmp_path):
    from ifprune.training.data_sft import sft_splits, write_unread

    n = write_unread(tmp_path / "u.jsonl", DATA, ["gsm8k", "mbpp"], after=300, per_family=40, val_per_family=24)
    rows = [json.loads(x) for x in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert n == len(rows) == 80 and {r["family"] for r in rows} == {"gsm8k", "mbpp"}
    read, val = sft_splits(DATA, ["gsm8k", "mbpp"], max_per_family=300, val_per_family=24)
    later, _ = sft_splits(DATA, ["gsm8k", "mbpp"], max_per_family=40, val_per_family=24, skip_per_family=300)
    key = lambda es: {(e.family, e.prompt) for e in es}  # noqa: E731
    unread = {(r["family"], r["prompt"]) for r in rows}
    assert unread == key(later) and not unread & (key(read) | key(val))
    with pytest.raises(IfpruneError, match="no training examples after position 400"):
        write_unread(tmp_path / "v.jsonl", DATA, ["mbpp"], after=400, per_family=5, val_per_family=24)


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder not present")
def test_real_sft_mixture_families_and_splits():
    train_set, val = sft_splits(DATA, ["gsm8k", "mbpp", "t0"], max_per_family=50, val_per_family=5)
    assert {e.family for e in val} == {"gsm8k", "mbpp", "t0"} and len(val) == 15
    assert not {e.prompt for e in val} & {e.prompt for e in train_set}
    mbpp = load_family(DATA, "mbpp")
    assert len(mbpp) == 374  # task_ids 601-974 only: the MBPP train split
    # the eval nll suite's validation mix (gsm8k train tail, Alpaca tail, ...) never reaches training
    from ifprune.eval.families import reserved_prompts

    big, _ = sft_splits(DATA, ["gsm8k", "general"], max_per_family=100000, val_per_family=5)
    reserved = reserved_prompts(DATA)
    assert len(reserved) > 100 and not reserved & {e.prompt for e in big}


def test_cli_bad_config_exits_2(tmp_path, capsys):
    from ifprune.cli import main

    p = tmp_path / "c.yaml"
    p.write_text("stage: sft\nlr_predictor: -0.1\n")
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err
    assert "lr_predictor must be >= 0" in err and len(err.strip().splitlines()) == 1


def test_attach_merges_lora_in_place_and_keeps_the_layout(tmp_path):
    train(base_cfg(tmp_path, steps=1), lm=tiny_lm(), sft_data=EXAMPLES)
    lm = tiny_lm()
    fp = lm.fingerprint()
    before = lm.layout.layers[0].down.weight.detach().clone()
    art = load_artifact(tmp_path / "run" / "artifact")
    art.attach(lm)
    art.attach(lm)  # idempotent
    assert lm.layout.layers[0].down is lm.model.model.layers[0].mlp.down_proj  # masks still hook the live module
    assert not torch.equal(before, lm.layout.layers[0].down.weight)
    assert lm.fingerprint() != fp


def test_warm_start_fits_head_to_griffin_per_prompt(tmp_path):
    from ifprune.selection.selectors import GriffinSelector
    from ifprune.training.warmstart import topk_agreement

    prompts = [f"add {a} and {b}" for a in range(10) for b in range(4)] + [f"write def f{a}" for a in range(20)]
    data = [SFTExample("x", p, "1") for p in prompts]
    t = Trainer(base_cfg(tmp_path, warmstart_prompts=60, warmstart_epochs=40, warmstart_lr=3e-3), lm=tiny_lm(),
                sft_data=data)
    ws = t.warmstart
    assert ws["prompts"] == 60 and ws["val_prompts"] == 6
    # the fitted head agrees with GRIFFIN on held-out prompts better than one mean mask does
    assert ws["val_topk_agreement"] > ws["mean_mask_topk_agreement"], ws
    assert json.loads((tmp_path / "run" / "warmstart.json").read_text())["best_epoch"] == ws["best_epoch"]
    # and its masks differ by prompt
    lm = tiny_lm()
    from ifprune.core.prompting import encode_batch
    from ifprune.selection.heads import pooled_hidden

    ids, att = encode_batch(lm.tokenizer, ["add 1 and 2", "write def f3"])
    z = t.predictor(pooled_hidden(lm.model, ids, att))
    g = torch.stack([GriffinSelector().scores(lm, p) for p in ("add 1 and 2", "write def f3")])
    assert not torch.equal(z[0].topk(24).indices.sort().values, z[1].topk(24).indices.sort().values)
    assert topk_agreement(z, g, 24) > 0.5


def test_warm_start_is_for_the_predictor_only(tmp_path):
    with pytest.raises(IfpruneError, match="method 'predictor' only"):
        base_cfg(tmp_path, method="static", warmstart_prompts=8)


def test_masked_ffn_records_the_activation_before_its_mask():
    from ifprune.core.ffn import discover
    from ifprune.core.hooks import MaskedFFN, record_intermediates

    lm = tiny_lm()
    ids = torch.tensor([[5, 9, 17, 33]])
    plain = {}
    with torch.no_grad(), record_intermediates(lm.layout, lambda i, x: plain.__setitem__(i, x.clone())):
        dense = lm.model(ids).logits
    masked = MaskedFFN(discover(lm.model))
    seen = {}
    zeros = torch.zeros(1, lm.num_layers, lm.d_ffn)
    with torch.no_grad(), masked.apply(zeros, record=lambda i, x: seen.__setitem__(i, x.clone())):
        out = lm.model(ids).logits
    masked.remove()
    assert not torch.allclose(out, dense)  # the mask took effect...
    assert torch.equal(seen[0], plain[0])  # ...after layer 0's activation was recorded unmasked
    assert seen[0].abs().sum() > 0 and set(seen) == set(range(lm.num_layers))


def test_oracle_weight_pulls_the_predictor_toward_the_response_channels(tmp_path):
    """With the LLM frozen the oracle term fits the head to the GRIFFIN scores of the whole example
    (read from the masked training forward): its error falls and its top-k agreement rises."""
    def run(weight, sub):
        cfg = base_cfg(tmp_path / sub, llm="frozen", steps=16, lr_predictor=1e-2, oracle_weight=weight, prior="zero")
        rows = [json.loads(line) for line in open(train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)["log"])]
        return rows

    rows = run(1.0, "on")
    assert all({"oracle_mse", "oracle_agreement"} <= set(r) for r in rows)
    first = sum(r["oracle_mse"] for r in rows[:4]) / 4
    last = sum(r["oracle_mse"] for r in rows[-4:]) / 4
    assert last < 0.85 * first, (first, last)
    agree = [r["oracle_agreement"] for r in rows]
    assert sum(agree[-4:]) > sum(agree[:4]), agree
    assert "oracle_mse" not in run(0.0, "off")[0]


def test_static_at_keep_one_is_the_dense_sft_reference(tmp_path):
    """method static at keep 1.0 keeps every channel (SoftTopK's mask is all ones): only the LLM trains,
    and compare names the row dense-sft and runs it at full width on the tuned weights."""
    from ifprune.eval.compare import CompareConfig, run_compare

    summary = train(base_cfg(tmp_path / "d", method="static", keep=1.0, prior="zero", steps=4), lm=tiny_lm(),
                    sft_data=EXAMPLES)
    rows = [json.loads(line) for line in open(summary["log"])]
    assert all(r["lambda_min"] == 1.0 for r in rows)
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"prompt": e.prompt, "response": e.response, "family": e.family}) + "\n"
                            for e in EXAMPLES[::3]))
    cfg = CompareConfig(suites=["nll"], selectors=["dense", f"predictor:{tmp_path / 'd' / 'run' / 'artifact'}"],
                        keeps=[0.5], nll_data=str(data), cache_dir=str(tmp_path / "cache"))
    dense, tuned = run_compare(tiny_lm(), cfg, progress=False, load_fresh=tiny_lm)["results"]
    assert tuned["selector"] == "dense-sft" and tuned["width"] == tuned["d_ffn"] == dense["width"]
    assert tuned["model_hash"] != dense["model_hash"]  # the tuned weights ran, not the base model
    assert tuned["metrics"]["nll_per_token"]["value"] < dense["metrics"]["nll_per_token"]["value"]


def test_compare_runs_trained_artifacts_on_fresh_models(tmp_path):
    """eval compare: predictor:DIR per input, predictor-task:DIR per task description, learned-static."""
    from ifprune.eval.compare import CompareConfig, SelectorSpec, run_compare

    train(base_cfg(tmp_path / "p", steps=2), lm=tiny_lm(), sft_data=EXAMPLES)
    train(base_cfg(tmp_path / "s", method="static", steps=2), lm=tiny_lm(), sft_data=EXAMPLES)
    pred, stat = tmp_path / "p" / "run" / "artifact", tmp_path / "s" / "run" / "artifact"
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"prompt": e.prompt, "response": e.response, "family": e.family}) + "\n"
                            for e in EXAMPLES[::3]))
    base = tiny_lm()
    before = base.fingerprint()
    cfg = CompareConfig(suites=["nll"], selectors=["dense", f"predictor:{pred}", f"predictor-task:{pred}",
                                                   f"predictor:{stat}"],
                        keeps=[0.5], nll_data=str(data), cache_dir=str(tmp_path / "cache"))
    report = run_compare(base, cfg, progress=False, load_fresh=tiny_lm)
    labels = [r["selector"] for r in report["results"]]
    assert labels == ["dense", "ifpruning", "ifpruning-task", "learned-static"]
    assert all(r["width"] == 24 for r in report["results"][1:])
    assert base.fingerprint() == before  # artifacts were attached to fresh copies, not to the shared model
    assert report["results"][1]["model_hash"] != before
    with pytest.raises(IfpruneError, match="not a trained artifact"):
        SelectorSpec.parse(f"predictor:{tmp_path}")
    # no path: the shipped artifact, as generate uses it
    from ifprune.artifacts import DEFAULT_MODEL_ARTIFACT

    assert SelectorSpec.parse("predictor-task").checkpoint == str(DEFAULT_MODEL_ARTIFACT)
    # two artifacts that would share a row name get their run's name
    import shutil

    from ifprune.eval.compare import row_labels

    other = tmp_path / "p2" / "run" / "artifact"
    shutil.copytree(pred, other)
    labels = row_labels([SelectorSpec.parse(f"predictor:{pred}"), SelectorSpec.parse(f"predictor:{other}"),
                         SelectorSpec.parse("griffin")])
    assert list(labels.values()) == ["ifpruning[p/run]", "ifpruning[p2/run]", "griffin"]


def test_lm_eval_adapter_takes_a_trained_artifact(tmp_path):
    pytest.importorskip("lm_eval")
    from ifprune.eval.lm_eval_adapter import IfpruneLM

    train(base_cfg(tmp_path, steps=2), lm=tiny_lm(), sft_data=EXAMPLES)
    lm = tiny_lm()
    model = IfpruneLM(lm=lm, checkpoint=str(tmp_path / "run" / "artifact"))
    assert model.scorer.selector.name == "predictor" and model.scorer.width == 24  # the artifact's width
    assert lm._ifprune_artifact  # LoRA merged before any request

    class Req:
        args = ("add 1 and 2", " 3")

    (lp, greedy), = model.loglikelihood([Req()])
    assert lp < 0 and isinstance(greedy, bool)


def test_bench_times_a_trained_predictor_at_its_own_width(tmp_path):
    from ifprune.bench.latency import BenchConfig, run_bench

    torch.manual_seed(0)
    train(base_cfg(tmp_path, steps=2), lm=tiny_lm(), sft_data=EXAMPLES)
    art = str(tmp_path / "run" / "artifact")
    res = run_bench(tiny_lm(), BenchConfig(prompt_tokens=12, new_tokens=2, samples=1, selector="predictor",
                                           checkpoint=art))
    assert res["width"] == 24 and res["selection"].startswith("predictor (predictor, artifact)")
    assert res["summary"]["compact"]["selection_s"] > 0
    with pytest.raises(IfpruneError, match="trained at width 24"):
        run_bench(tiny_lm(), BenchConfig(prompt_tokens=12, new_tokens=2, selector="predictor", checkpoint=art,
                                         keep=0.25))
    with pytest.raises(IfpruneError, match="fixed by the artifact"):
        run_bench(tiny_lm(), BenchConfig(prompt_tokens=12, new_tokens=2, selector="predictor", checkpoint=art,
                                         backbone_layers=1))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "qwen3"])
def test_loss_position_head_equals_the_full_head(arch):
    from ifprune.core.tiny import tiny_model
    from ifprune.training.loop import loss_logits, token_losses

    model = tiny_model(arch, seed=1, vocab=128).double()
    ids = torch.randint(4, 120, (3, 12))
    att = torch.ones_like(ids)
    att[2, 9:] = 0
    labels = ids.clone()
    labels[:, :5] = -100
    labels[2, 9:] = -100
    labels[1, 7] = -100
    with torch.no_grad():
        full = token_losses(model(input_ids=ids, attention_mask=att).logits, labels)
        part = loss_logits(model, ids, att, labels).losses()
    torch.testing.assert_close(part[0], full[0], rtol=1e-6, atol=0)  # token_losses computes CE in float32
    assert torch.equal(part[1], full[1])


def test_bf16_autocast_step_loss_close_to_float32(tmp_path):
    from ifprune.core.precision import cpu_has_fast_bf16

    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        t = Trainer(base_cfg(tmp_path / precision, steps=1, bf16=precision == "bf16"), lm=tiny_lm(), sft_data=EXAMPLES)
        assert t.precision == ("bf16" if precision == "bf16" and cpu_has_fast_bf16() else "fp32")
        t.precision = precision  # the autocast path itself, on any CPU (emulated bf16 is slow, not wrong)
        loss, *_ = t.forward(t.micro_batch(0, 0))
        losses[precision] = float(loss)
    assert abs(losses["bf16"] - losses["fp32"]) < 0.05 * losses["fp32"], losses


def test_group_by_length_is_a_seeded_permutation_with_less_padding(tmp_path):
    from ifprune.training.loop import GROUP_BATCHES

    data = [SFTExample("math", f"q{i}", "x" * (1 + (i * 7) % 40)) for i in range(200)]
    t = Trainer(base_cfg(tmp_path, batch_size=2, data={"max_seq_len": 64, "max_prompt_tokens": 32,
                                                       "group_by_length": True}), lm=tiny_lm(), sft_data=data)
    n = 2 * GROUP_BATCHES
    grouped = [p for s in range(GROUP_BATCHES) for p in t._positions(2 * s)]
    assert sorted(grouped) == list(range(n))  # every example of the group once
    assert grouped == [p for s in range(GROUP_BATCHES) for p in t._positions(2 * s)]  # deterministic

    def padded(steps):
        return sum(t.micro_batch(s, 0).input_ids.numel() for s in range(steps))

    grouped_pad = padded(GROUP_BATCHES)
    t.cfg.data.group_by_length = False
    assert grouped_pad < padded(GROUP_BATCHES)


def test_nan_learning_rate_and_empty_config_are_refused(tmp_path):
    with pytest.raises(IfpruneError, match="lr_llm must be a finite number"):
        config_from_dict({"lr_llm": float("nan")})
    p = tmp_path / "c.yaml"
    p.write_text("stage: sft\nlr_predictor: .nan\n")
    with pytest.raises(IfpruneError, match="lr_predictor must be a finite number"):
        load_config(p)
    for text in ("", "# only a comment\n"):
        p.write_text(text)
        with pytest.raises(IfpruneError, match="is empty"):
            load_config(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(IfpruneError, match="expected a mapping"):
        load_config(p)


def test_continuing_from_a_missing_or_partial_checkpoint_names_what_is_missing(tmp_path):
    import shutil

    cfg = base_cfg(tmp_path, steps=2, checkpoint_every=1)
    train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    ckpt = tmp_path / "run" / "checkpoint"
    (ckpt / "optimizer.safetensors").unlink()
    with pytest.raises(IfpruneError, match="incomplete: optimizer.safetensors missing"):
        train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    (ckpt / "optimizer.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(IfpruneError, match="optimizer.safetensors is unreadable"):
        train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    shutil.rmtree(ckpt)
    with pytest.raises(IfpruneError, match="no checkpoint.*missing.*resume: false"):
        train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    cfg.resume = False  # starting over is explicit
    assert train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)["steps"] == 2


def test_eval_every_logs_validation_nll_against_tokens(tmp_path):
    val = EXAMPLES[::5]
    cfg = base_cfg(tmp_path, steps=4, eval_every=2)
    t = Trainer(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    t.val = val
    t.run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("event") == "validation"]
    assert [r["step"] for r in evals] == [2, 4]
    assert evals[0]["tokens"] < evals[1]["tokens"]
    assert set(evals[0]["val_nll"]) == {"math", "code", "all"} and evals[0]["examples"] == len(val)


def _resealed(art, edit):
    import importlib

    mod = importlib.import_module("ifprune.selection.artifact")
    cfg = json.loads((art / "config.json").read_text())
    edit(cfg)
    cfg.pop("files"), cfg.pop("config_sha256")
    mod.seal_config(art, cfg)


@pytest.mark.parametrize("tamper,match", [
    ("llm_bogus", "config.json does not match its recorded checksum"),
    ("llm_none_resealed", "llm is 'none' but llm/ holds"),
    ("llm_bogus_resealed", "llm must be 'lora', 'full' or 'none'"),
    ("nan_head_resealed", "holds NaN or inf"),
    ("head_bytes", "predictor.safetensors does not match its recorded sha256"),
    ("target_modules", "adapter_config.json does not match its recorded sha256"),
    ("missing_adapter", "adapter_model.safetensors is missing"),
    ("extra_file", "is not one of the artifact's recorded files"),
    ("unsealed", "has no checksums"),
    ("width_resealed", "width 999 exceeds d_ffn"),
])
def test_a_tampered_artifact_is_refused_with_one_clear_error(tmp_path, tamper, match):
    import shutil

    from safetensors.torch import load_file, save_file

    src = tmp_path / "run" / "artifact"
    train(base_cfg(tmp_path, steps=1), lm=tiny_lm(), sft_data=EXAMPLES)
    art = tmp_path / "copy"
    shutil.copytree(src, art)
    cfg_path = art / "config.json"
    if tamper == "llm_bogus":
        cfg = json.loads(cfg_path.read_text())
        cfg["llm"] = "bogus"
        cfg_path.write_text(json.dumps(cfg))
    elif tamper == "llm_none_resealed":
        _resealed(art, lambda c: c.update(llm="none"))
    elif tamper == "llm_bogus_resealed":
        _resealed(art, lambda c: c.update(llm="bogus"))
    elif tamper == "width_resealed":
        _resealed(art, lambda c: c.update(width=999))
    elif tamper == "nan_head_resealed":
        st = load_file(str(art / "predictor.safetensors"))
        st["fc2.bias"][0] = float("nan")
        save_file(st, str(art / "predictor.safetensors"))
        _resealed(art, lambda c: None)
    elif tamper == "head_bytes":
        st = load_file(str(art / "predictor.safetensors"))
        st["fc2.bias"] *= 50
        save_file(st, str(art / "predictor.safetensors"))
    elif tamper == "target_modules":
        ac = json.loads((art / "llm" / "adapter_config.json").read_text())
        ac["target_modules"] = ["q_proj"]
        (art / "llm" / "adapter_config.json").write_text(json.dumps(ac))
    elif tamper == "missing_adapter":
        (art / "llm" / "adapter_model.safetensors").unlink()
    elif tamper == "extra_file":
        (art / "llm" / "more.safetensors").write_bytes((art / "predictor.safetensors").read_bytes())
    elif tamper == "unsealed":
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("files"), cfg.pop("config_sha256")
        cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(IfpruneError, match=match):
        load_artifact(art)
    load_artifact(src)  # the original is fine


def test_start_example_continues_on_the_examples_an_earlier_stage_did_not_read(tmp_path):
    data = [SFTExample("math", f"q{i}", f"a{i}") for i in range(40)]
    first = Trainer(base_cfg(tmp_path / "a", steps=2), lm=tiny_lm(), sft_data=data)
    seen = {e.prompt for s in range(2) for e in [first._example(p) for p in range(s * 4, s * 4 + 4)]}
    later = Trainer(base_cfg(tmp_path / "b", steps=2, data={"max_seq_len": 64, "max_prompt_tokens": 32,
                                                             "start_example": 8}), lm=tiny_lm(), sft_data=data)
    batch = later.micro_batch(0, 0)
    read = {later.lm.tokenizer.decode(row[row != later.lm.tokenizer.pad_token_id]).split("u:")[1].split("</s>")[0]
            for row in batch.pred_ids}
    assert read == {first._example(p).prompt for p in range(8, 12)}  # the same permutation, from position 8 on
    assert len(seen) == 8 and not read & seen
    train(later.cfg, lm=tiny_lm(), sft_data=data)
    changed = base_cfg(tmp_path / "b", steps=4, data={"max_seq_len": 64, "max_prompt_tokens": 32, "start_example": 0})
    with pytest.raises(IfpruneError, match="data.start_example=8"):
        train(changed, lm=tiny_lm(), sft_data=data)
    with pytest.raises(IfpruneError, match="start_example must be >= 0"):
        base_cfg(tmp_path, data={"start_example": -1})


def test_the_data_order_is_one_seeded_shuffle_per_pass_whatever_order_positions_are_read(tmp_path):
    data = [SFTExample("math", f"q{i}", f"a{i}") for i in range(10)]
    t = Trainer(base_cfg(tmp_path, steps=2, seed=3), lm=tiny_lm(), sft_data=data)
    want = {p: data[int(torch.randperm(10, generator=torch.Generator().manual_seed(3 * 100003 + p // 10))[p % 10])]
            for p in range(30)}
    for p in [25, 3, 14, 29, 0, 11, 3, 27]:  # passes visited out of order: the kept shuffle is per pass
        assert t._example(p) is want[p]


def test_a_run_past_the_end_of_the_data_says_it_reads_a_second_pass(tmp_path, caplog):
    data = [SFTExample("math", f"q{i}", f"a{i}") for i in range(10)]
    cfg = base_cfg(tmp_path, steps=2, data={"max_seq_len": 64, "max_prompt_tokens": 32, "start_example": 6})
    with caplog.at_level("WARNING"):
        summary = train(cfg, lm=tiny_lm(), sft_data=data)
    assert summary["data_positions"] == [6, 14] and summary["training_examples"] == 10
    assert "positions from 10 on are pass 2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a run that starts inside the second pass (v6 did)
        train(base_cfg(tmp_path / "c", steps=2, data={"max_seq_len": 64, "max_prompt_tokens": 32, "start_example": 12}),
              lm=tiny_lm(), sft_data=data)
    assert "positions from 12 on are pass 2" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        train(base_cfg(tmp_path / "b", steps=2), lm=tiny_lm(), sft_data=data)
    assert "pass" not in caplog.text


def test_a_dotted_override_into_a_value_is_one_clear_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("stage: sft\nmethod: predictor\n")
    with pytest.raises(IfpruneError, match="stage is a value .'sft'., not a section"):
        load_config(p, {"stage.x": 1})
    assert load_config(p, {"data.max_seq_len": 99}).data.max_seq_len == 99


def _tuned_weights(art):
    lm = tiny_lm()
    load_artifact(art).attach(lm)
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def test_a_stage_continuing_an_artifact_keeps_its_llm_change(tmp_path):
    """A full or frozen stage from a LoRA or full artifact saves an artifact whose LLM is the earlier one's
    plus this stage's change (learning rate 0 here: exactly the earlier one's), not the base model's."""
    train(base_cfg(tmp_path / "a", steps=2), lm=tiny_lm(), sft_data=EXAMPLES)
    lora = tmp_path / "a" / "run" / "artifact"
    want = _tuned_weights(lora)
    assert any(not torch.equal(want[n], p) for n, p in tiny_lm().model.named_parameters())
    chain = [("b", "full", lora), ("c", "full", tmp_path / "b" / "run" / "artifact"),
             ("d", "frozen", tmp_path / "c" / "run" / "artifact"), ("e", "frozen", lora)]
    for name, llm, init in chain:
        train(base_cfg(tmp_path / name, steps=1, llm=llm, lr_llm=0.0, init_from=str(init)), lm=tiny_lm(), sft_data=EXAMPLES)
        art = tmp_path / name / "run" / "artifact"
        got = _tuned_weights(art)
        assert json.loads((art / "config.json").read_text())["llm"] == {"frozen": load_artifact(init).config["llm"]}.get(llm, llm)
        for n in want:  # bf16 storage of the delta: within a bf16 step of the merged LoRA
            torch.testing.assert_close(got[n], want[n], atol=2e-2, rtol=1e-2, msg=f"{name}: {n}")
    with pytest.raises(IfpruneError, match="cannot carry: continue it with llm: full"):
        Trainer(base_cfg(tmp_path / "f", steps=1, init_from=str(tmp_path / "b" / "run" / "artifact")),
                lm=tiny_lm(), sft_data=EXAMPLES)


def test_init_llm_from_takes_the_llm_from_one_artifact_and_the_head_from_another(tmp_path):
    """Fine-tune dense first, then prune: a predictor run whose head starts from a pruning run's artifact and
    whose LLM starts from a static (e.g. keep 1.0) run's LoRA; at learning rate 0 the artifact holds exactly both."""
    train(base_cfg(tmp_path / "p", steps=2), lm=tiny_lm(), sft_data=EXAMPLES)
    train(base_cfg(tmp_path / "s", steps=2, method="static", keep=1.0, prior="zero", lr_llm=5e-2), lm=tiny_lm(),
          sft_data=EXAMPLES)
    head_art, llm_art = tmp_path / "p" / "run" / "artifact", tmp_path / "s" / "run" / "artifact"
    cfg = base_cfg(tmp_path / "m", steps=1, lr_llm=0.0, lr_predictor=0.0, init_from=str(head_art),
                   init_llm_from=str(llm_art))
    train(cfg, lm=tiny_lm(), sft_data=EXAMPLES)
    art = tmp_path / "m" / "run" / "artifact"
    got, want = _tuned_weights(art), _tuned_weights(llm_art)
    assert any(not torch.equal(_tuned_weights(head_art)[n], want[n]) for n in want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=2e-2, rtol=1e-2, msg=n)
    a, b = load_artifact(art).head.state_dict(), load_artifact(head_art).head.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert json.loads((art / "config.json").read_text())["recipe"]["init_llm_from"] == str(llm_art)
    with pytest.raises(IfpruneError, match="init_llm_from replaces init_from's LLM change: give init_from too"):
        base_cfg(tmp_path / "x", init_llm_from=str(llm_art))
    train(base_cfg(tmp_path / "o", steps=1, method="static", keep=1.0, prior="zero"), lm=tiny_lm(seed=1),
          sft_data=EXAMPLES)
    other = base_cfg(tmp_path / "y", steps=1, init_from=str(head_art), init_llm_from=str(tmp_path / "o" / "run" / "artifact"))
    with pytest.raises(IfpruneError, match="init_llm_from artifact .* was trained on another base model"):
        Trainer(other, lm=tiny_lm(), sft_data=EXAMPLES)
    with pytest.raises(IfpruneError, match="holds a LoRA of rank 4; this run's lora_r is 8: set lora_r: 4"):
        Trainer(base_cfg(tmp_path / "z", steps=1, lora_r=8, init_from=str(head_art), init_llm_from=str(llm_art)),
                lm=tiny_lm(), sft_data=EXAMPLES)


def test_split_at_refresh_cuts_each_response_after_r_tokens():
    from ifprune.training.loop import split_at_refresh

    labels = torch.tensor([[-100, -100, 5, 6, 7, 8], [-100, 9, 10, -100, -100, -100]])
    head, tail = split_at_refresh(labels, 2)
    assert head.tolist() == [[-100, -100, 5, 6, -100, -100], [-100, 9, 10, -100, -100, -100]]
    assert tail.tolist() == [[-100, -100, -100, -100, 7, 8], [-100] * 6]


def test_training_under_refresh_runs_and_scores_as_inference_does(tmp_path):
    from ifprune.selection.heads import standardise
    from ifprune.selection.selectors import GriffinSelector

    data = [SFTExample("math", f"add {a} and {b}", f"the sum of {a} and {b} is {a + b}") for a in range(4) for b in range(3)]
    t = Trainer(base_cfg(tmp_path, steps=3, refresh=4, eval_every=3), lm=tiny_lm(), sft_data=data)
    t.val = data[::4]
    t.run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    val = [r for r in rows if r.get("event") == "validation"]
    assert len(val) == 1 and val[0]["val_nll"]["all"] > 0
    # the loop's re-selected scores are the inference ones: GRIFFIN over the prompt and the first R tokens
    # (in float32, as inference runs: on a CPU with fast bf16 the loop would autocast them)
    tr = Trainer(base_cfg(tmp_path / "b", steps=1, refresh=4, bf16=False), lm=tiny_lm(), sft_data=data)
    from ifprune.training.loop import sft_batch
    b = sft_batch(tr.lm.tokenizer, data[:2], tr.cfg)
    with torch.no_grad():
        z = tr.scores(b).float()
        got = tr.refreshed_scores(z, b.input_ids, b.attention_mask, b.labels)
    for i in range(2):
        n = int(((b.labels[i] != -100).long().cumsum(0) <= 4).logical_and(b.attention_mask[i].bool()).sum())
        g = GriffinSelector.scores_from_ids(tr.lm, b.input_ids[i:i + 1, :n])
        torch.testing.assert_close(got[i], standardise(z[i]) + standardise(g), atol=1e-4, rtol=1e-4)
    for bad, match in (({"refresh": -1}, "refresh must be >= 0"), ({"refresh": 4, "method": "static"}, "applies to method"),
                       ({"refresh": 4, "oracle_weight": 1.0}, "not combined"),
                       ({"prefill": "kept"}, "prefill must be pruned, dense or dense-answer"),
                       ({"prefill": "dense", "method": "static"}, "applies to method")):
        with pytest.raises(IfpruneError, match=match):
            base_cfg(tmp_path, **bad)


def test_dense_answer_prefill_trains_and_changes_only_what_the_compact_model_reads(tmp_path):
    from ifprune.training.loop import sft_batch

    data = [SFTExample("math", f"add {a} and {b}", f"the sum of {a} and {b} is {a + b}") for a in range(4) for b in range(3)]
    t = Trainer(base_cfg(tmp_path, steps=2, refresh=4, prefill="dense-answer", eval_every=2), lm=tiny_lm(), sft_data=data)
    t.val = data[::4]
    t.run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    nll = {}
    for prefill in ("pruned", "dense", "dense-answer"):
        tr = Trainer(base_cfg(tmp_path / prefill, steps=1, refresh=4, prefill=prefill, bf16=False), lm=tiny_lm(), sft_data=data)
        nll[prefill] = tr.validate(data[:4])["all"]
        b = sft_batch(tr.lm.tokenizer, data[:2], tr.cfg)
        loss, *_ = tr.forward(b)
        loss.backward()  # the predictor still learns from the positions it masks
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in tr.predictor.parameters())
    assert len(set(nll.values())) == 3


def test_ce_weight_scales_the_data_loss_and_0_is_pure_distillation(tmp_path):
    from ifprune.training.data_sft import SFTExample
    from ifprune.training.loop import Trainer, sft_batch

    data = [SFTExample("math", f"add {a} and {b}", f"the sum of {a} and {b} is {a + b}") for a in range(3) for b in range(2)]
    losses = {}
    for w in (1.0, 0.5, 0.0):
        torch.manual_seed(0)
        tr = Trainer(base_cfg(tmp_path / str(w), steps=1, distill=True, ce_weight=w, bf16=False), lm=tiny_lm(),
                     sft_data=data)
        b = sft_batch(tr.lm.tokenizer, data[:2], tr.cfg)
        loss, _, sums, counts, aux = tr.forward(b)
        losses[w] = (float(loss.detach()), float(sums.sum() / counts.sum()), aux["kl"])
    for w, (loss, ce, kl) in losses.items():
        assert loss == pytest.approx(w * ce + kl, rel=1e-4, abs=1e-6)
    assert losses[0.0][1] > 0 and losses[0.0][0] == pytest.approx(losses[0.0][2], rel=1e-4, abs=1e-6)
    with pytest.raises(IfpruneError, match="ce_weight 0 leaves nothing to train on"):
        base_cfg(tmp_path, ce_weight=0.0)
    with pytest.raises(IfpruneError, match="ce_weight must be >= 0"):
        base_cfg(tmp_path, ce_weight=-1.0, distill=True)


def test_distillation_under_refresh_pairs_each_position_with_the_teachers(tmp_path):
    """Every channel kept and the LoRA at its zero start: the student is the teacher, so the KL is 0 only
    if the head's and the re-selected tail's positions meet the teacher's own (a shifted pairing is not)."""
    from ifprune.training.loop import kl_to_teacher, loss_logits, sft_batch

    data = [SFTExample("math", f"add {a} and {b}", f"the sum of {a} and {b} is {a + b}") for a in range(3) for b in range(2)]
    tr = Trainer(base_cfg(tmp_path, steps=1, keep=1.0, refresh=4, distill=True, ce_weight=0.0, bf16=False),
                 lm=tiny_lm(), sft_data=data)
    b = sft_batch(tr.lm.tokenizer, data[:2], tr.cfg)
    _, _, _, _, aux = tr.forward(b)
    assert aux["kl"] < 1e-5
    with torch.no_grad():
        t = loss_logits(tr.model, b.input_ids, b.attention_mask, b.labels).logits
    assert float(kl_to_teacher(t, t.roll(1, 0)).mean()) > 100 * max(aux["kl"], 1e-7)


def test_teacher_from_distils_towards_a_tuned_dense_artifact(tmp_path):
    data = [SFTExample("math", f"add {a} and {b}", f"the sum of {a} and {b} is {a + b}") for a in range(3) for b in range(2)]
    train(base_cfg(tmp_path / "d", steps=3, method="static", keep=1.0, prior="zero"), lm=tiny_lm(), sft_data=data)
    dense = tmp_path / "d" / "run" / "artifact"
    cfg = dict(steps=2, keep=1.0, refresh=4, distill=True, bf16=False)
    tr = Trainer(base_cfg(tmp_path / "s", teacher_from=str(dense), **cfg), lm=tiny_lm(), sft_data=data)
    want = _tuned_weights(dense)
    got = dict(tr.teacher.named_parameters())
    assert any(not torch.equal(want[n], p) for n, p in tiny_lm().model.named_parameters())
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-5, msg=n)
    assert not any(p.requires_grad for p in tr.teacher.parameters())
    from ifprune.training.loop import sft_batch
    b = sft_batch(tr.lm.tokenizer, data[:2], tr.cfg)
    assert tr.forward(b)[4]["kl"] > 1e-4  # the base student differs from the tuned teacher
    tr.run()
    art = tmp_path / "s" / "run" / "artifact"
    assert json.loads((art / "config.json").read_text())["recipe"]["teacher_from"] == str(dense)
    # bad input: no distill, a missing artifact, another base model, a resume with another teacher
    with pytest.raises(IfpruneError, match="teacher_from names a distillation teacher: set distill: true"):
        base_cfg(tmp_path / "x", teacher_from=str(dense))
    with pytest.raises(IfpruneError, match="no trained artifact at"):
        Trainer(base_cfg(tmp_path / "x", teacher_from=str(tmp_path / "nowhere"), **cfg), lm=tiny_lm(), sft_data=data)
    with pytest.raises(IfpruneError, match="teacher_from artifact .* was trained on another base model"):
        Trainer(base_cfg(tmp_path / "x", teacher_from=str(dense), **cfg), lm=tiny_lm(seed=1), sft_data=data)
    cfg["steps"] = 4
    with pytest.raises(IfpruneError, match="was made with teacher_from="):
        Trainer(base_cfg(tmp_path / "s", teacher_from=None, **cfg), lm=tiny_lm(), sft_data=data).run()


def test_training_under_compensated_plans(tmp_path, monkeypatch):
    from ifprune.compensation import calibration
    from ifprune.compensation.calibration import default_mode
    from ifprune.core.tiny import tiny_lm as tiny_arch_lm
    from ifprune.training.loop import sft_batch

    data = [SFTExample("math", f"add {a} and {b}", f"the sum of {a} and {b} is {a + b}") for a in range(4) for b in range(3)]
    t = Trainer(base_cfg(tmp_path, steps=3, compensate="calibration", bf16=False), lm=tiny_lm(), sft_data=data)
    moments = tmp_path / "run" / "compensation" / "moments"
    assert (moments / "manifest.json").is_file() and t.masked.compensate is not None
    # the predictor learns through the refit: its gradient is there, and the loss differs from plain masks
    b = sft_batch(t.lm.tokenizer, data[:2], t.cfg)
    torch.manual_seed(0)
    loss, *_ = t.forward(b)
    loss.backward()
    assert all(p.grad is not None for p in t.predictor.parameters())
    assert sum(float(p.grad.abs().sum()) for p in t.predictor.parameters()) > 0
    with torch.no_grad():
        saved, t.masked.compensate = t.masked.compensate, None
        torch.manual_seed(0)
        plain, *_ = t.forward(b)
        t.masked.compensate = saved
    assert abs(float(plain) - float(loss.detach())) > 1e-6
    t.optimizer.zero_grad()
    t.run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    art = tmp_path / "run" / "artifact"
    assert json.loads((art / "config.json").read_text())["recipe"]["compensate"] == "calibration"
    # a continued run refits with the statistics of the run's start, read back (not gathered again)
    monkeypatch.setattr(calibration, "collect_moments", lambda *a, **k: pytest.fail("moments gathered again"))
    again = Trainer(base_cfg(tmp_path, steps=4, compensate="calibration", bf16=False), lm=tiny_lm(), sft_data=data)
    assert torch.equal(again.compensation.G, t.compensation.G)
    monkeypatch.undo()
    with pytest.raises(IfpruneError, match="made with compensate='calibration', the config says 'none'"):
        Trainer(base_cfg(tmp_path, steps=4, bf16=False), lm=tiny_lm(), sft_data=data).run()
    # the artifact runs as it was trained: compensated by default; a plainly trained one is not
    lm = tiny_lm()
    load_artifact(art).attach(lm)
    assert default_mode(lm) == "calibration" and lm.compensator is not None  # on from attach, as trained
    from ifprune.runtime.generation import SamplingConfig, generate

    sel = make_selector("predictor", checkpoint=str(art))
    res = generate(lm, "add 1 and 2", selector=sel, width=sel.artifact.width, sampling=SamplingConfig(max_new_tokens=4))
    assert res.compensation["mode"] == "calibration"
    plain_run = train(base_cfg(tmp_path / "plain", steps=1), lm=tiny_lm(), sft_data=data)
    lm2 = tiny_lm()
    load_artifact(plain_run["artifact"]).attach(lm2)
    assert default_mode(lm2) == "none" and lm2.compensator is None and default_mode(tiny_lm()) == "calibration"
    # bad input
    with pytest.raises(IfpruneError, match="compensate must be 'none' or 'calibration'"):
        base_cfg(tmp_path, compensate="prompt")
    gpt2 = tiny_arch_lm("gpt2", layers=2)
    gpt2.tokenizer = char_tokenizer()
    with pytest.raises(IfpruneError, match="have a bias"):
        Trainer(base_cfg(tmp_path / "gpt2", steps=1, compensate="calibration", llm="frozen"), lm=gpt2, sft_data=data)


def test_on_policy_batches_train_the_models_own_samples_by_the_kl_alone(tmp_path):
    """on_policy: a seeded choice of micro-batches whose responses are the pruned model's own samples (the same
    on a second call: resuming agrees), scored by the KL to the teacher with no cross-entropy on them."""
    from ifprune.training.loop import sft_batch

    data = [SFTExample("math", f"add {a} and {b}", f"the sum of {a} and {b} is {a + b}") for a in range(3) for b in range(2)]
    tr = Trainer(base_cfg(tmp_path, steps=1, distill=True, on_policy=1.0, on_policy_tokens=6, bf16=False,
                          method="predictor"), lm=tiny_lm(), sft_data=data)
    assert tr.on_policy_step(0, 0)
    b = tr.micro_batch(0, 0)
    again = tr.micro_batch(0, 0)
    assert b.on_policy and torch.equal(b.input_ids, again.input_ids)
    off = sft_batch(tr.lm.tokenizer, [tr._example(p) for p in tr._positions(tr.cfg.data.start_example)], tr.cfg)
    assert not torch.equal(b.labels, off.labels)  # the model's own answers, not the data's
    loss, _, _, _, aux = tr.forward(b)
    assert float(loss.detach()) == pytest.approx(aux["kl"], rel=1e-4, abs=1e-6)
    half = Trainer(base_cfg(tmp_path / "h", steps=1, distill=True, on_policy=0.5, bf16=False), lm=tiny_lm(),
                   sft_data=data)
    picks = [half.on_policy_step(s, 0) for s in range(64)]
    assert 16 < sum(picks) < 48 and picks == [half.on_policy_step(s, 0) for s in range(64)]
    with pytest.raises(IfpruneError, match="on_policy trains the model's own samples"):
        base_cfg(tmp_path, on_policy=0.5)
    with pytest.raises(IfpruneError, match="on_policy is a fraction"):
        base_cfg(tmp_path, on_policy=1.5, distill=True)


def test_family_nll_is_eval_scorers_and_the_masked_models_response_nll():
    """The training report scores with eval's scorer: per family, the summed response-token NLL of the masked full
    model (every dropped channel zero; no plan: the full model) over each example as training tokenises it."""
    import contextlib

    from ifprune.core.hooks import MaskedFFN
    from ifprune.core.plan import Plan
    from ifprune.core.tiny import tiny_lm
    from ifprune.training.evaluate import family_nll

    lm = tiny_lm("llama", layers=2)
    examples = [SFTExample("a", "say hi", "hi there"), SFTExample("b", "count", "one two three"),
                SFTExample("a", "name a colour", "red")]
    plans = {e.prompt: Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=torch.Generator().manual_seed(i)),
                                        24) for i, e in enumerate(examples)}
    kw = dict(max_seq_len=64, max_prompt_tokens=48)

    def reference(plan_for):
        sums, counts = {}, {}
        for e in examples:
            t = tokenize_sft(lm.tokenizer, e, **kw)
            plan = plan_for(e)
            with torch.no_grad(), (MaskedFFN(lm.layout).apply(plan.to_mask()) if plan is not None
                                   else contextlib.nullcontext()):
                logits = lm.model(t.input_ids[None]).logits[0, :-1].float()
            keep = t.labels[1:] != -100
            nll = torch.nn.functional.cross_entropy(logits[keep], t.labels[1:][keep], reduction="sum")
            sums[e.family] = sums.get(e.family, 0.0) + float(nll)
            counts[e.family] = counts.get(e.family, 0) + int(keep.sum())
        return {**{f: sums[f] / counts[f] for f in sums}, "all": sum(sums.values()) / sum(counts.values())}

    for plan_for in (lambda e: plans[e.prompt], lambda e: None):
        got, want = family_nll(lm, examples, plan_for, **kw), reference(plan_for)
        assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k], rel=1e-4) for k in want)
