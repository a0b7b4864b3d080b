import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # the shared helpers (api_helpers, browser_helpers, ...)

# Tests live in one folder per tier; each folder is also a marker (`pytest -m unit`, `-m "not browser"`).
TIERS = ("unit", "server", "app", "browser", "integration")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(here)
        if rel.parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))


SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("UNLEARN_NO_HUB", "1")  # tests never reach for the hub

# UNLEARN_TEST_DEVICE=cuda (bench/gpu.sh): the tiny model and SAE of the unit tests are built on that
# device (unlearn_core.model.tiny builds them on the CPU); models a test builds from its own config stay there.
TEST_DEVICE = os.environ.get("UNLEARN_TEST_DEVICE", "cpu")
if TEST_DEVICE != "cpu":
    import unlearn_core.model.tiny as _tiny

    _tiny_model, _tiny_sae = _tiny.tiny_model, _tiny.tiny_sae
    _tiny.tiny_model = lambda *a, **k: _tiny_model(*a, **k).to(TEST_DEVICE, print_details=False)

    def _sae_on_device(*a, **k):
        loaded = _tiny_sae(*a, **k)
        loaded.sae.to(TEST_DEVICE)
        return loaded

    _tiny.tiny_sae = _sae_on_device


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    from unlearn_core.model.tiny import tiny_engine

    return tiny_engine(cache_dir=str(tmp_path_factory.mktemp("tinycache")))


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing: tests and CI read real data from it")
    return SHARED_DATA
