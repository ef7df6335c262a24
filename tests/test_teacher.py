"""Teacher answers (training.teacher): provenance is checked, a cut run resumes without trusting a cut line,
and training examples take the teacher's finished answers."""

from __future__ import annotations

import json

import pytest

from ifprune.core.errors import IfpruneError
from ifprune.training.data_sft import SFTExample
from ifprune.training.config import TrainConfig
from ifprune.training.teacher import FORMAT, check_header, read_rows, repeats_itself, with_teacher


def folder(tmp_path, rows, **header):
    (tmp_path / "header.json").write_text(json.dumps({"format": FORMAT, "model": "m.gguf", "model_sha256": "abc",
                                                      "config": {"per_family": 2, "max_new_tokens": 8}, **header}))
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_examples_take_the_teachers_finished_greedy_answers(tmp_path):
    rows = [{"id": "a", "family": "general", "prompt": "p1", "kind": "greedy", "response": "T1", "finished": True},
            {"id": "b", "family": "general", "prompt": "p2", "kind": "greedy", "response": "cut", "finished": False},
            {"id": "c", "family": "general", "prompt": "p1", "kind": "sample0", "response": "S", "finished": True}]
    ex = [SFTExample("general", "p1", "ref1"), SFTExample("general", "p2", "ref2"), SFTExample("code", "p1", "r")]
    out = with_teacher(ex, folder(tmp_path, rows))
    assert out == [SFTExample("general", "p1", "T1")]


def test_answers_that_repeat_themselves_are_dropped_only_when_asked(tmp_path):
    loop = "def is_abundant(num):\n    return num % 10 == 1\n\n" * 3
    rows = [{"id": "a", "family": "mbpp", "prompt": "p1", "kind": "greedy", "response": loop, "finished": True},
            {"id": "b", "family": "mbpp", "prompt": "p2", "kind": "greedy", "response": "ok. ok. ok.", "finished": True}]
    ex = [SFTExample("mbpp", "p1", "r1"), SFTExample("mbpp", "p2", "r2")]
    f = folder(tmp_path, rows)
    assert repeats_itself(loop) and not repeats_itself("ok. ok. ok.")  # (short sentences may repeat)
    assert [e.prompt for e in with_teacher(ex, f)] == ["p1", "p2"]
    assert [e.prompt for e in with_teacher(ex, f, drop_repeats=True)] == ["p2"]
    cfg = TrainConfig(stage="sft")
    cfg.data.teacher_drop_repeats = True
    with pytest.raises(IfpruneError, match="give data.teacher"):
        cfg.validate()


def test_teacher_answers_of_another_model_or_without_provenance_are_refused(tmp_path):
    m = tmp_path / "model.gguf"
    m.write_bytes(b"weights")
    (tmp_path / "t").mkdir()
    f = folder(tmp_path / "t", [{"id": "a", "family": "g", "prompt": "p", "kind": "greedy", "response": "x",
                                 "finished": True}])
    with pytest.raises(IfpruneError, match="not of model.gguf"):
        with_teacher([SFTExample("g", "p", "r")], f, m)
    (f / "header.json").unlink()
    with pytest.raises(IfpruneError, match="no header.json"):
        with_teacher([SFTExample("g", "p", "r")], f)


def test_a_resumed_folder_must_match_and_may_grow(tmp_path):
    header = {"format": FORMAT, "model_sha256": "abc", "config": {"per_family": 2, "max_new_tokens": 8}}
    check_header(tmp_path, header)
    check_header(tmp_path, {**header, "config": {"per_family": 5, "max_new_tokens": 8}})  # more prompts: fine
    with pytest.raises(IfpruneError, match="config.max_new_tokens: 8 there, 16 now"):
        check_header(tmp_path, {**header, "config": {"per_family": 2, "max_new_tokens": 16}})
    with pytest.raises(IfpruneError, match="model_sha256"):
        check_header(tmp_path, {**header, "model_sha256": "def"})
    # a header written before --split existed made training answers: it extends as split=train, never validation
    check_header(tmp_path, {**header, "config": {"per_family": 2, "max_new_tokens": 8, "split": "train"}})
    with pytest.raises(IfpruneError, match="config.split: 'train' there, 'validation' now"):
        check_header(tmp_path, {**header, "config": {"per_family": 2, "max_new_tokens": 8, "split": "validation"}})


def test_a_cut_last_line_is_dropped_not_trusted(tmp_path):
    p = tmp_path / "answers.jsonl"
    p.write_text(json.dumps({"id": "a", "response": "ok"}) + "\n" + '{"id": "b", "respo')
    assert list(read_rows(p)) == ["a"]


def test_a_fidelity_set_is_refused_as_training_data_and_written_for_eval(tmp_path):
    from ifprune.training.teacher import TeacherConfig, eval_rows

    rows = [{"id": "b", "family": "code", "prompt": "p2", "kind": "greedy", "response": "cut", "finished": False},
            {"id": "a", "family": "general", "prompt": "p1", "kind": "greedy", "response": "T1", "finished": True},
            {"id": "c", "family": "general", "prompt": "p1", "kind": "sample0", "response": "S", "finished": True},
            {"id": "d", "family": "general", "prompt": "p3", "kind": "greedy", "response": " ", "finished": True}]
    f = folder(tmp_path, rows, config={"per_family": 2, "split": "validation"})
    with pytest.raises(IfpruneError, match="answers the validation prompts"):
        with_teacher([SFTExample("general", "p1", "r")], f)
    assert eval_rows(f) == [{"id": "a", "family": "general", "prompt": "p1", "response": "T1"},
                            {"id": "b", "family": "code", "prompt": "p2", "response": "cut"}]
    with pytest.raises(IfpruneError, match="--split must be train or validation"):
        TeacherConfig(split="test").validate()
