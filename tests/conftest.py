import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("UNLEARN_NO_HUB", "1")  # tests never reach for the hub


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    from unlearn_core.tiny import tiny_engine

    return tiny_engine(cache_dir=str(tmp_path_factory.mktemp("tinycache")))


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing: tests and CI read real data from it")
    return SHARED_DATA
