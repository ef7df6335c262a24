import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Tests never write to the user's own cache (~/.cache/ifprune): theirs is a folder of the checkout, kept between
# runs (the dequantised default model and its statistics are not rebuilt each time), or $IFPRUNE_TEST_CACHE.
TEST_CACHE = Path(os.environ.get("IFPRUNE_TEST_CACHE", Path(__file__).resolve().parents[1] / ".test-cache"))
os.environ["IFPRUNE_CACHE"] = str(TEST_CACHE)

DATA = Path(os.environ.get("IFPRUNE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA} (set IFPRUNE_DATA)")
    return DATA


@pytest.fixture(scope="session")
def default_lm():
    """The real SmolLM2-135M-Instruct, loaded once per test session."""
    from ifprune.core.errors import IfpruneError
    from ifprune.core.loading import load_model

    try:
        return load_model()
    except IfpruneError as e:
        pytest.skip(f"default model unavailable: {e}")
