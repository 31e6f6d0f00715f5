"""The lean result model shows the same evidence as the engine did before it.

tests/fixtures/evidence_before/ was captured with the engine as it was before
evidence was normalised (capture.py says how): a seeded demo portrait, the sample
policies of that day, two name lists, every stored result with its evidence JSON
and reason, `explain` texts and review-workbook texts. Here the current engine runs
on the same inputs, and each result's evidence, put together from its policy
version's template and its own values, must read exactly as it did."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines import engine, evidence, explain
from pipelines.policies import load_dir

HERE = Path(__file__).resolve().parent / "fixtures" / "evidence_before"
AS_OF = dt.date(2026, 11, 26)


@pytest.fixture(scope="module")
def world():
    portrait = pq.read_table(HERE / "portrait.parquet")
    policies, errors = load_dir(HERE / "policies")
    assert not [e for e in errors if not e.warning]
    lists = {f.stem.removeprefix("name_list-"): pq.read_table(f) for f in HERE.glob("name_list-*.parquet")}
    before = pq.read_table(HERE / "results.parquet")
    now = engine.evaluate(portrait, policies, AS_OF, lists)
    return portrait, policies, lists, before, now


def test_every_result_and_its_evidence_text_are_as_before(world):
    _, policies, _, before, now = world
    assert now.num_rows == before.num_rows == 11_541
    same = [c for c in before.column_names if c != "evidence"]
    assert now.select(same).equals(before.select(same))
    texts = evidence.full_evidence(now, engine.evidence_templates(policies))
    assert texts.to_pylist() == before.column("evidence").to_pylist()


def test_each_policy_version_is_stored_once_and_rows_keep_only_their_values(world):
    _, policies, _, before, now = world
    templates = engine.evidence_templates(policies)
    assert set(pc.unique(now.column("evidence_version")).to_pylist()) <= set(templates)
    assert len(templates) == len(policies)
    per_row = sum(len(a) + len(r) for a, r in zip(now.column("evidence_actual").to_pylist(),
                                                  now.column("evidence_result").to_pylist()))
    assert per_row < 0.2 * sum(len(e) for e in before.column("evidence").to_pylist())


def test_explain_and_review_texts_are_as_before(world):
    portrait, policies, lists, _, now = world
    texts = json.loads((HERE / "texts.json").read_text(encoding="utf-8"))
    by_id = {p.id: p for p in policies}
    for key, text in texts["explain"].items():
        pid, uscc = key.split("|")
        assert explain.explain(portrait, by_id[pid], uscc, AS_OF, lists, all_policies=policies,
                               matches=now) == text, key
    full = evidence.full_evidence(now, engine.evidence_templates(policies))
    index = {f"{p}|{u}": e for p, u, e in zip(now.column("policy_id").to_pylist(), now.column("uscc").to_pylist(),
                                               full.to_pylist())}
    for key, text in texts["review"].items():
        assert evidence.readable(index[key]) == text, key


def test_the_values_split_back_from_the_full_text_render_it_again(world):
    """`split` (what the hand-made results of other tests use) is `render`'s inverse."""
    _, _, _, before, _ = world
    for text in before.column("evidence").to_pylist()[::7]:
        template, actual, result = evidence.split(json.loads(text))
        assert evidence.render(template, actual, result) == text
