"""Hypothesis profiles for the hardening suite.

- `ci` (default): every fuzz test runs its bounded CI budget with a fixed,
  derandomised seed, so `make test` is reproducible and stays well under a minute.
- `long`: `HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/hardening -m fuzz`
  runs LONG_FACTOR times as many examples per test, still derandomised (the
  same inputs on every machine), each test bounded by pytest-timeout.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
LONG_FACTOR = 25
_COMMON = dict(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
                           HealthCheck.large_base_example],
)
settings.register_profile("ci", **_COMMON)
settings.register_profile("long", **_COMMON)
settings.load_profile(PROFILE if PROFILE in ("ci", "long") else "ci")


def budget(ci_examples: int) -> int:
    """Examples for one fuzz test: its CI budget, LONG_FACTOR times that in the long run."""
    return ci_examples * LONG_FACTOR if PROFILE == "long" else ci_examples


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: property-based tests over the parsers (HYPOTHESIS_PROFILE=long for the long run)")
