"""The runs tests share two short trainings (see tests/support/runs.py)."""

from __future__ import annotations

import pytest

from tests.conftest import Account
from tests.support.runs import TwoRuns, two_trained_runs


@pytest.fixture(scope="session")
def two_runs(client, alice: Account, worker, tiny_model: str) -> TwoRuns:
    return two_trained_runs(client, alice, tiny_model)
