"""Shared fixtures: one short calibration per test session, in a private cache folder."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("ttp_cache"))
    os.environ["TTP_SEARCH_CACHE"] = root
    return root


@pytest.fixture(scope="session")
def calibrated(cache_root):
    """A LayerTimeModel from a 30-second calibration, saved into the session cache."""
    from ttp_search.cost import LayerTimeModel
    from ttp_search.errors import CalibrationError

    try:
        return LayerTimeModel.calibrate(30, progress=False, seed=0)
    except CalibrationError:
        # A shared machine slowed to a crawl can time too few networks in 30 s (seen here:
        # one network, peak 65 GFLOP/s); one longer try before every cost test errors.
        return LayerTimeModel.calibrate(90, progress=False, seed=0)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (skipped only when none can start)."""
    from ttp_search.testing import PostgresUnavailableError, start_postgres

    try:
        server = start_postgres()
    except PostgresUnavailableError as err:
        pytest.skip(f"PostgreSQL unavailable: {err}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server, as an Optuna storage URL."""
    return postgres_server.create_database()
