"""Property-based tests (hypothesis): whatever a file or a config holds, loading it gives a valid
result or one IfpruneError, never another exception and never a silently accepted invalid value."""

from __future__ import annotations

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ifprune.core.errors import IfpruneError  # noqa: E402
from ifprune.core.plan import Plan  # noqa: E402

# derandomize: the same examples every run, so CI cannot go red by the draw (a failure once found is
# kept as an explicit case below)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)

index_rows = st.lists(st.lists(st.one_of(st.integers(-3, 12), st.floats(-3, 12), st.booleans(), st.text(max_size=2)),
                               min_size=0, max_size=5), min_size=0, max_size=4)


def plan_like() -> st.SearchStrategy:
    """Mostly plan-shaped objects with something off, plus arbitrary JSON."""
    shaped = st.fixed_dictionaries({"indices": index_rows | json_values,
                                    "d_ffn": st.integers(-2, 12) | json_values},
                                   optional={"meta": json_values, "hash": st.text(max_size=16) | json_values})
    return shaped | json_values


def _valid(obj) -> bool:
    """What a plan must be: a non-empty list of equally long, sorted, unique in-range int rows."""
    idx, d = obj.get("indices"), obj.get("d_ffn")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        return False
    if not isinstance(idx, list) or not idx or not all(isinstance(r, list) and r for r in idx):
        return False
    if len({len(r) for r in idx}) != 1:
        return False
    for r in idx:
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < d for i in r):
            return False
        if r != sorted(set(r)):
            return False
    return True


@SETTINGS
@given(obj=plan_like())
def test_plan_files_give_a_valid_plan_or_one_clear_error(tmp_path, obj):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(obj, allow_nan=True))
    try:
        plan = Plan.load(path)
    except IfpruneError:
        return
    # accepted: it must really be a plan, with exactly the indices the file holds
    assert isinstance(obj, dict) and _valid(obj), obj
    assert plan.indices.tolist() == obj["indices"] and plan.d_ffn == obj["d_ffn"]


def test_a_float_index_in_a_plan_file_is_refused(tmp_path):
    """Found by the property above: [0.0, 1] was accepted as [0, 1]."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"indices": [[0, 1], [0.0, 1]], "d_ffn": 2}))
    with pytest.raises(IfpruneError, match="indices must be integers .*found 0.0"):
        Plan.load(path)


@SETTINGS
@given(data=st.binary(max_size=64))
def test_plan_files_of_random_bytes_are_one_clear_error(tmp_path, data):
    for name in ("p.json", "p.safetensors"):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(IfpruneError):
            Plan.load(path)


@pytest.fixture(scope="module")
def sealed_artifact(tmp_path_factory):
    """A small real artifact (static scores, no LLM change), sealed as training writes it."""
    from ifprune.core.tiny import tiny_lm
    from ifprune.selection.artifact import save_artifact
    from ifprune.selection.heads import StaticScores

    lm = tiny_lm("llama")
    path = tmp_path_factory.mktemp("art") / "a"
    save_artifact(path, lm=lm, kind="static", width=24, module=StaticScores(lm.num_layers, lm.d_ffn), llm="none",
                  peft_model=None, base_state=None, recipe={}, stats={}, base_fingerprint=lm.fingerprint())
    return path


FIELDS = ["kind", "llm", "num_layers", "d_ffn", "width", "hidden_size", "head_hidden", "backbone_layers",
          "base_fingerprint", "files", "format"]


@SETTINGS
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_artifact_configs_with_any_field_changed_are_refused_or_still_valid(sealed_artifact, tmp_path, field, value):
    """A changed field without resealing is always refused (the config's own sha256); resealed, the
    value is validated: the artifact loads only when the field still makes sense."""
    import shutil

    from ifprune.selection.artifact import load_artifact, seal_config

    for reseal in (False, True):
        path = tmp_path / f"a{int(reseal)}"
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(sealed_artifact, path)
        cfg = json.loads((path / "config.json").read_text())
        original = cfg.get(field)
        cfg[field] = value
        if reseal:
            cfg.pop("config_sha256", None)  # seal_config records the files and the config's sha256 anew
            try:
                seal_config(path, cfg)
            except (IfpruneError, TypeError, ValueError, AttributeError):
                continue  # sealing itself refused a config it cannot record
        else:
            (path / "config.json").write_text(json.dumps(cfg, allow_nan=True))
        try:
            art = load_artifact(path)
        except IfpruneError:
            continue
        unchanged = value == original and type(value) is type(original)
        assert reseal or unchanged, (field, value)
        if field in ("num_layers", "d_ffn", "width"):
            assert art.config[field] == original  # a different shape never loads into these weights


@SETTINGS
@given(key=st.sampled_from(["lr_llm", "lr_predictor", "steps", "batch_size", "keep", "width", "eps", "stage",
                            "method", "llm", "data.max_seq_len", "data.start_example", "data.families", "bf16"]),
       value=json_values)
def test_training_configs_give_a_valid_recipe_or_one_clear_error(key, value):
    import math

    from ifprune.training.config import config_from_dict

    obj = {"stage": "sft", "method": "predictor"}
    if key.startswith("data."):
        obj["data"] = {key[5:]: value}
    else:
        obj[key] = value
    try:
        cfg = config_from_dict(obj)
    except IfpruneError:
        return
    got = getattr(cfg.data, key[5:]) if key.startswith("data.") else getattr(cfg, key)
    assert got == value
    if isinstance(got, float):
        assert math.isfinite(got)
    if key in ("steps", "batch_size", "data.max_seq_len"):
        assert isinstance(got, int) and got >= 1
    if key in ("lr_llm", "lr_predictor"):
        assert got >= 0


# --- request parsing (the server) --------------------------------------------------------------
REQUEST_FIELDS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                  "top_k", "seed", "stream", "stream_options", "stop", "n", "task", "logprobs", "frequency_penalty",
                  "tools", "response_format", "user", "echo"]
texts = st.text(max_size=12) | st.sampled_from(["", " ", "hi \ud800", "ifprune", "ifprune-code", "ifprune-dense",
                                                "code", "\x00"])
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", ""]) | json_values,
                                           "content": texts | json_values}), max_size=3) | json_values
request_bodies = st.fixed_dictionaries(
    {}, optional={"model": st.sampled_from(["ifprune", "ifprune-code", "ifprune-dense", "gpt-4"]) | json_values,
                  "prompt": texts | st.lists(texts, max_size=2) | json_values, "messages": messages,
                  "max_tokens": st.integers(-2, 2000) | json_values, "temperature": st.floats() | json_values,
                  "top_p": st.floats() | json_values, "top_k": st.integers(-3, 100) | json_values,
                  "stop": texts | st.lists(texts, max_size=6) | json_values, "stream": json_values,
                  "task": texts | json_values, "seed": st.integers(-5, 2**64) | json_values, "n": json_values,
                  "logprobs": json_values, "frequency_penalty": json_values, "extra": json_values}) | json_values


@pytest.fixture(scope="module")
def tiny_server():
    from ifprune.core.tiny import tiny_lm
    from ifprune.selection.selectors import make_selector
    from ifprune.serve import IfpruneServer, ServeConfig

    s = IfpruneServer(tiny_lm("llama", d_ffn=48), make_selector("griffin"), ServeConfig(port=0))
    yield s
    s.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=request_bodies, chat=st.booleans())
def test_request_parsing_gives_a_valid_request_or_a_4xx(tiny_server, body, chat):
    """Any JSON body: an ApiError with a 4xx status, or a request whose fields are all in range."""
    from ifprune.serve.protocol import ApiError, parse_body

    raw = json.dumps(body).encode()
    try:
        req, model, _ = tiny_server.build_request(parse_body(raw), chat)
    except ApiError as e:
        assert 400 <= e.status < 500 and e.message
        return
    assert isinstance(body, dict) and model in tiny_server.model_ids()
    assert 1 <= req.max_tokens <= tiny_server.config.max_tokens_limit and req.ids
    assert 0 <= req.temperature <= 2 and 0 < req.top_p <= 1 and req.top_k >= 0
    assert len(req.stop) <= 4 and all(isinstance(s, str) and s for s in req.stop)
    assert req.mode in ("input", "task", "dense")
    for s in [req.select_text or "", req.task or ""] + req.stop:
        s.encode("utf-8")  # nothing a tokenizer cannot encode gets through


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=64))
def test_request_bodies_of_random_bytes_are_a_400(raw):
    from ifprune.serve.protocol import ApiError, parse_body

    try:
        assert isinstance(parse_body(raw), dict)
    except ApiError as e:
        assert e.status == 400


# --- the CLI's argument handling ------------------------------------------------------------------
FLAG_VALUES = {
    "--keep": ["0.5", "0", "1.5", "-1", "nan", "x", ""], "--width": ["8", "0", "-3", "1e9", "w"],
    "--selector": ["griffin", "dense", "predictor", "bogus", ""], "--threads": ["1", "0", "-2", "many"],
    "--max-new-tokens": ["4", "0", "-1", "z"], "--temperature": ["0", "-1", "nan", "inf"],
    "--top-p": ["1", "0", "2"], "--plan": ["/nonexistent/plan.json", ""], "--dtype": ["float32", "int3", ""],
    "--out": ["/nonexistent/dir/out", ""], "--format": ["hf", "gguf", "onnx"], "--quant": ["int8", "int5", "none"],
    "--sparsity": ["2:4", "1:8", "none"], "--port": ["0", "70000", "-1"], "--task": ["", "code"],
    "--compensate": ["none", "calibration", "bogus"], "--set": ["stage.x=1", "steps=nan", "=", "lr=1"],
}


@settings(max_examples=80, deadline=None)
@given(cmd=st.sampled_from(["generate", "eval", "export", "compress", "serve", "bench", "train"]),
       flags=st.lists(st.sampled_from(sorted(FLAG_VALUES)).flatmap(
           lambda f: st.tuples(st.just(f), st.sampled_from(FLAG_VALUES[f]))), max_size=4),
       prompt=st.sampled_from(["", "hi", "\x00", "-x"]))
def test_cli_arguments_give_one_clear_error_never_a_traceback(cmd, flags, prompt):
    """Any mix of flags (valid or not) on a model that does not exist: exit 2 with a one-line
    `ifprune: error:` (or argparse's usage error), never a traceback and never a run."""
    import contextlib
    import io

    from ifprune.cli import main

    argv = [cmd] + (["/nonexistent/config.yaml"] if cmd == "train" else ["--model", "/nonexistent/model-dir"])
    for flag, value in flags:
        argv += [flag, value]
    if cmd == "generate":
        argv.append(prompt)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: unknown flag or bad value
            rc = e.code
    text = err.getvalue()
    assert rc == 2, (argv, rc, text[-500:])
    assert "Traceback" not in text, (argv, text[-1500:])
    assert "ifprune: error:" in text or "error:" in text.splitlines()[-1], (argv, text[-500:])
