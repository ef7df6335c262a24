"""OpenAI-compatible serving of prompt- and task-pruned models (see docs/serving.md)."""

from .app import IfpruneServer, ServeConfig
from .engine import DEFAULT_TASKS

__all__ = ["IfpruneServer", "ServeConfig", "DEFAULT_TASKS"]
