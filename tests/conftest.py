from pathlib import Path

import pytest

# The benchmark files live in ../shared/data/shakespeare beside the checkout (never committed here).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "shakespeare"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "train.bin").exists():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (../shared/data/shakespeare beside the checkout)")
    return SHARED_DATA
