"""Benchmarks for pruned models: one module per suite, a shared scorer that applies a selector's
plan per example, result caching for resume, bootstrap statistics, comparison tables and plots."""

from __future__ import annotations

from ..core.errors import IfpruneError
from .base import Suite, SuiteResult, run_suite
from .scorer import Scorer


def suite_classes() -> dict[str, type[Suite]]:
    from .gsm8k import GSM8KSuite
    from .humaneval import HumanEvalSuite
    from .ifeval import IFEvalSuite
    from .math500 import Math500Suite
    from .mbpp import MBPPSuite
    from .mc import MCSuite
    from .nll import NLLSuite

    return {c.name: c for c in (NLLSuite, GSM8KSuite, Math500Suite, HumanEvalSuite, MBPPSuite, IFEvalSuite, MCSuite)}


SUITES = ("nll", "gsm8k", "math500", "humaneval", "mbpp", "ifeval", "mc")


def make_suite(name: str, **options) -> Suite:
    classes = suite_classes()
    if name not in classes:
        raise IfpruneError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    cls = classes[name]
    if name != "mc":
        options.pop("tasks", None)
    return cls(**{k: v for k, v in options.items() if v is not None or k in ("data_dir",)})


__all__ = ["SUITES", "Scorer", "Suite", "SuiteResult", "make_suite", "run_suite"]
