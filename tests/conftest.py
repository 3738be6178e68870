import numpy as np
import pytensor
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_configure(config):
    # Gradient checks and factorisations are only trustworthy in double precision.
    pytensor.config.floatX = "float64"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow (bash dev.sh test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def rng():
    return np.random.default_rng(20261126)


@pytest.fixture(autouse=True)
def _fresh_cache():
    import pymc_sparse as pms

    pms.clear_cache()
    yield
