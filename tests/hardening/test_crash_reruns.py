"""Safe reruns and backfills (issue 6, item 4): running the nightly stages of a
date again, and re-running an earlier date after a later one ("backfill"),
leave the outputs and the ledger exactly as one clean run of the dates did."""
from __future__ import annotations

import pytest

from tests.hardening import pipeline_state as ps


@pytest.fixture(scope="session")
def ref(tmp_path_factory):
    return ps.reference(tmp_path_factory.getbasetemp() / "hardening_reference")


def _assert_same(expected: dict, got: dict) -> None:
    problems = ps.diff(expected, got)
    assert not problems, "\n".join(problems[:25])


def test_the_same_date_twice_is_one_clean_run(ref):
    settings = ref.checkout(len(ref.order))          # both nights done
    ps.run_stages(settings, ps.stages(ps.N2))        # night 2 once more, every task
    _assert_same(ref.final, ps.picture(settings))


def test_a_backfill_of_the_first_date_after_the_second_changes_nothing(ref):
    settings = ref.checkout(len(ref.order))
    ps.run_stages(settings, ps.stages(ps.N1))        # `airflow dags backfill` over 11-26 again
    _assert_same(ref.final, ps.picture(settings))
