"""The runnable examples in docstrings run and say what they show (the quick ones; the
examples that train or calibrate are exercised by their modules' own tests)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "ttp_search.budget.schedule",
    "ttp_search.budget.schedules",
    "ttp_search.curves.rank",
    "ttp_search.curves.study",
    "ttp_search.dynamics.model_error",
    "ttp_search.engine.planner",
]


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
