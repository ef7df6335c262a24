"""lm-evaluation-harness task configs over the local copies of public data sets, so lm-eval runs offline.

lm-eval's own tasks download from the Hub. These YAMLs read the JSONL/CSV files of the data folder
(`../shared/data` in this project) through the `datasets` library's json/csv loaders, in the same
prompt formats as lm-eval's tasks of the same name. They are named `local_<task>` so they never
shadow lm-eval's own. Written once per data folder (absolute paths inside):

    python -m ifprune.eval.lm_eval_tasks --data-dir ../shared/data --out lm_eval_tasks
    lm_eval --model hf --model_args pretrained=EXPORT_DIR --include_path lm_eval_tasks --tasks local_arc_easy
    python -m ifprune.eval.lm_eval_adapter run --model ifprune --include_path lm_eval_tasks --tasks local_arc_easy

Test splits are for reporting only (the project's data rules); GSM8K's few-shot examples come from
its train split, MMLU's from each subject's dev split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.errors import IfpruneError

# {query, choices, gold} files: lm-eval's multiple-choice prompt "query\nAnswer:" + " choice"
CHOICE_TASKS = {
    "arc_easy": "icl_eval/world_knowledge/arc_easy.jsonl",
    "arc_challenge": "icl_eval/world_knowledge/arc_challenge.jsonl",
    "piqa": "icl_eval/commonsense_reasoning/piqa.jsonl",
    "boolq": "icl_eval/reading_comprehension/boolq.jsonl",
    "openbookqa": "icl_eval/commonsense_reasoning/openbook_qa.jsonl",
    "copa": "icl_eval/commonsense_reasoning/copa.jsonl",
}
WINOGRANDE = "icl_eval/language_understanding/winogrande.jsonl"
GSM8K = ("gsm8k/train.jsonl", "gsm8k/test.jsonl")
MMLU = ("mmlu/dev", "mmlu/test")
PREFIX = "local_"


def _yaml(obj: dict) -> str:
    """YAML via JSON values (valid YAML 1.2), one key per line; no PyYAML dumper quirks."""
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in obj.items())


def _need(path: Path) -> str:
    if not path.exists():
        raise IfpruneError(f"{path} not found: --data-dir must be the data folder (it holds icl_eval/, gsm8k/, mmlu/)")
    return str(path.resolve())


def task_configs(data_dir: str | Path) -> dict[str, dict]:
    """File name -> task config, for every local task (and the local_mmlu group)."""
    root = Path(data_dir)
    out: dict[str, dict] = {}
    for name, rel in CHOICE_TASKS.items():
        out[f"{PREFIX}{name}.yaml"] = {
            "task": PREFIX + name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": _need(root / rel)}},
            "test_split": "test", "output_type": "multiple_choice",
            "doc_to_text": "{{query}}\nAnswer:", "doc_to_choice": "{{choices}}", "doc_to_target": "gold",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "source": rel}}
    # winogrande, partial scoring as lm-eval's: the two contexts are the choices, the continuation is scored
    out[f"{PREFIX}winogrande.yaml"] = {
        "task": PREFIX + "winogrande", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": _need(root / WINOGRANDE)}}, "test_split": "test",
        "output_type": "multiple_choice", "doc_to_text": "gold", "doc_to_choice": "{{context_options}}",
        "doc_to_target": "{{continuation}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "source": WINOGRANDE}}
    train, test = GSM8K
    out[f"{PREFIX}gsm8k.yaml"] = {
        "task": PREFIX + "gsm8k", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": _need(root / train), "test": _need(root / test)}},
        "training_split": "train", "fewshot_split": "train", "test_split": "test", "num_fewshot": 5,
        "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0},
        "filter_list": [{"name": "strict-match", "filter": [
            {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}],
        "metadata": {"version": 1.0, "source": f"{train}, {test}"}}
    dev, test = (root / MMLU[0], root / MMLU[1])
    _need(dev), _need(test)
    subjects = sorted(p.name[: -len("_test.csv")] for p in test.glob("*_test.csv"))
    if not subjects:
        raise IfpruneError(f"no *_test.csv files in {test}")
    for s in subjects:
        nice = s.replace("_", " ")
        out[f"{PREFIX}mmlu_{s}.yaml"] = {
            "task": f"{PREFIX}mmlu_{s}", "dataset_path": "csv",
            "dataset_kwargs": {"data_files": {"dev": _need(dev / f"{s}_dev.csv"), "test": _need(test / f"{s}_test.csv")}},
            "fewshot_split": "dev", "test_split": "test", "num_fewshot": 5, "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about {nice}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choice0}}\nB. {{choice1}}\nC. {{choice2}}\nD. {{choice3}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
            "fewshot_config": {"sampler": "first_n"},
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "source": f"mmlu/dev/{s}_dev.csv, mmlu/test/{s}_test.csv"}}
    out[f"{PREFIX}mmlu.yaml"] = {"group": PREFIX + "mmlu", "task": [f"{PREFIX}mmlu_{s}" for s in subjects],
                                 "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean",
                                                            "weight_by_size": True}],
                                 "metadata": {"version": 1.0}}
    return out


def write_tasks(data_dir: str | Path, out: str | Path) -> list[str]:
    """Write every task config into `out` (atomically per file); returns the task names."""
    from ..core.paths import write_text

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise IfpruneError(f"--out {out} is a file: give a folder for the task configs")
    names = []
    for fname, cfg in task_configs(data_dir).items():
        write_text(out / fname, _yaml(cfg))
        names.append(cfg.get("group") or cfg["task"])
    return names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write lm-eval task configs over the local data sets (offline).")
    p.add_argument("--data-dir", default=None, help="the data folder (default: $IFPRUNE_DATA or ../shared/data)")
    p.add_argument("--out", required=True, help="folder for the YAMLs (pass it to lm_eval as --include_path)")
    a = p.parse_args(argv)
    from .data import default_data_dir

    try:
        names = write_tasks(a.data_dir or default_data_dir(), a.out)
    except IfpruneError as e:
        print(f"ifprune: error: {e}", file=sys.stderr)
        return 2
    plain = [n for n in names if not n.startswith(PREFIX + "mmlu_")]
    print(f"wrote {len(names)} task configs to {a.out}: {', '.join(plain)} (+ {len(names) - len(plain)} MMLU subjects)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
