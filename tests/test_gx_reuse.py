"""Validate once per delivery: GX results reused for the same delivery under the same suite."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil

import pytest

from pipelines import gx_reuse, validate
from pipelines.ingest import ingest_feed
from pipelines.validate import GateClosed, gate, validate_feed
from tests.ingest_helpers import AS_OF, deliver, row, rows, settings_for

DELIVERED = AS_OF - dt.timedelta(days=1)


@pytest.fixture
def gx_runs(monkeypatch):
    """Every real GX run (checkpoint) validate_feed makes, by feed."""
    runs: list[str] = []
    real = validate.run_suite

    def counted(qdir, feed, suite, table, params):
        runs.append(feed)
        return real(qdir, feed, suite, table, params)

    monkeypatch.setattr(validate, "run_suite", counted)
    return runs


def _with_bad_rows(feed: str) -> list[dict]:
    # one row quarantined by a rule, one with a field defect: the verdict has something to reuse
    bad = {"tax": row("tax", 8, tax_year="1999"), "registry": row("registry", 8, uscc="91411303MA12345")}[feed]
    defect = {"tax": row("tax", 9, credit_rating="E"), "registry": row("registry", 9, phone="12")}[feed]
    return rows(feed, 5) + [bad, defect]


def _outputs(settings, feed: str, as_of=AS_OF) -> dict:
    """What validation leaves for the report and the gate (verdict without the reuse note)."""
    verdict = json.loads(settings.verdict_path(feed, as_of).read_text(encoding="utf-8"))
    verdict.pop("gx_reused", None)
    quarantine = settings.quality_dir(as_of) / f"{feed}_quarantine.csv"
    validated = verdict["validated_path"]
    return {
        "verdict": verdict,
        "quarantine": quarantine.read_bytes(),
        "validated": open(validated, "rb").read() if validated else None,
    }


def _docs(settings, feed: str, as_of=AS_OF) -> list[str]:
    docs = settings.data_docs_dir(as_of)
    return sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.html") if "static" not in p.parts
                  and (feed in p.parts or p.name == "index.html" or p.parent.name == "expectations"))


def test_the_same_delivery_is_validated_by_gx_once(tmp_path, gx_runs):
    settings = settings_for(tmp_path)
    deliver(settings, "tax", DELIVERED, _with_bad_rows("tax"))
    ingest_feed(settings, "tax", AS_OF)
    first = validate_feed(settings, "tax", AS_OF)
    assert gx_runs == ["tax"] and "gx_reused" not in first
    assert first["rule_bad_rows"] == 1 and first["field_defect_values"] == 1
    before, docs = _outputs(settings, "tax"), _docs(settings, "tax")
    results_file = next((settings.quality_dir(AS_OF) / "gx_results" / "tax").rglob("*.json"))
    stored = results_file.read_bytes()

    # the second night on the same data: ingest again, validate without GX
    ingest_feed(settings, "tax", AS_OF)
    second = validate_feed(settings, "tax", AS_OF)
    assert gx_runs == ["tax"]
    assert second["gx_reused"]["validated_as_of"] == AS_OF.isoformat()
    assert "沿用当次 Great Expectations 规则校验结果" in second["gx_reused"]["note"]
    assert _outputs(settings, "tax") == before
    assert {k: v for k, v in second.items() if k != "gx_reused"} == first
    # the Data Docs: the same pages, built from the very result GX stored
    assert _docs(settings, "tax") == docs
    assert [p.read_bytes() for p in (settings.quality_dir(AS_OF) / "gx_results" / "tax").rglob("*.json")] == [stored]
    index = (settings.data_docs_dir(AS_OF) / "index.html").read_text(encoding="utf-8")
    assert "validations/tax/" in index


def test_reused_results_equal_a_fresh_gx_run(tmp_path):
    settings = settings_for(tmp_path)
    deliver(settings, "registry", DELIVERED, _with_bad_rows("registry"))
    ingest_feed(settings, "registry", AS_OF)
    captured = []
    real = validate.run_suite
    try:
        validate.run_suite = lambda *a: captured.append(real(*a)) or captured[-1]
        validate_feed(settings, "registry", AS_OF)
    finally:
        validate.run_suite = real
    (entry,) = [p for p in settings.validation_cache_dir("registry").glob("*.json") if not p.name.endswith(".gx.json")]
    reread = gx_reuse._read_entry(entry)
    # kwargs keep GX's resolved parameter values (datetimes) exactly
    assert reread["results"] == captured[0]
    assert any(isinstance(v, dt.datetime) for r in captured[0] for v in r["kwargs"].values())


def test_the_next_night_reuses_gx_only_where_the_suite_does_not_read_the_run_date(tmp_path, gx_runs):
    settings = settings_for(tmp_path)
    for feed in ("registry", "tax"):
        deliver(settings, feed, DELIVERED, rows(feed, 5))
        ingest_feed(settings, feed, AS_OF)
        validate_feed(settings, feed, AS_OF)
    assert gx_runs == ["registry", "tax"]

    night = AS_OF + dt.timedelta(days=1)
    for feed in ("registry", "tax"):
        ingest_feed(settings, feed, night)
    registry = validate_feed(settings, "registry", night)
    tax = validate_feed(settings, "tax", night)
    # the registry's suite reads as_of (not in the future): validated again; the tax suite does not
    assert gx_runs == ["registry", "tax", "registry"]
    assert "gx_reused" not in registry
    assert tax["gx_reused"]["validated_as_of"] == AS_OF.isoformat()
    # the run-date checks are decided for this night
    assert tax["status"] == "accepted" and tax["age_days"] == 2 and tax["as_of"] == night.isoformat()
    assert "validations/tax/" in (settings.data_docs_dir(night) / "index.html").read_text(encoding="utf-8")


def test_timeliness_is_decided_afresh_on_a_reused_delivery(tmp_path, gx_runs):
    settings = settings_for(tmp_path)
    deliver(settings, "credit", DELIVERED, rows("credit", 3))
    ingest_feed(settings, "credit", AS_OF)
    assert validate_feed(settings, "credit", AS_OF)["status"] == "accepted"
    late = AS_OF + dt.timedelta(days=30)
    ingest_feed(settings, "credit", late)
    verdict = validate_feed(settings, "credit", late)
    assert gx_runs == ["credit"] and "gx_reused" in verdict
    assert verdict["status"] == "stale"
    with pytest.raises(GateClosed):
        gate(settings, late)


def test_a_changed_delivery_is_validated_again(tmp_path, gx_runs):
    settings = settings_for(tmp_path)
    deliver(settings, "tax", DELIVERED, rows("tax", 5))
    ingest_feed(settings, "tax", AS_OF)
    validate_feed(settings, "tax", AS_OF)
    # a redelivery for the same date with other content
    shutil.rmtree(settings.landing / "tax" / DELIVERED.isoformat())
    deliver(settings, "tax", DELIVERED, rows("tax", 5) + [row("tax", 6, tax_year="1999")])
    ingest_feed(settings, "tax", AS_OF)
    verdict = validate_feed(settings, "tax", AS_OF)
    assert gx_runs == ["tax", "tax"] and "gx_reused" not in verdict
    assert verdict["rule_bad_rows"] == 1


def test_a_changed_suite_is_validated_again(tmp_path, gx_runs):
    settings = settings_for(tmp_path)
    suites = tmp_path / "expectations"
    shutil.copytree(settings.expectations, suites)
    settings = dataclasses.replace(settings, expectations=suites)
    deliver(settings, "tax", DELIVERED, rows("tax", 5) + [row("tax", 6, rd_expense_10k="100", revenue_10k="50")])
    ingest_feed(settings, "tax", AS_OF)
    assert validate_feed(settings, "tax", AS_OF)["field_defect_values"] == 1
    assert validate_feed(settings, "tax", AS_OF)["field_defect_values"] == 1
    assert gx_runs == ["tax"]

    suite = json.loads((suites / "tax.json").read_text(encoding="utf-8"))
    suite["expectations"] = [e for e in suite["expectations"] if e["type"] != "expect_column_pair_values_a_to_be_greater_than_b"]
    (suites / "tax.json").write_text(json.dumps(suite, ensure_ascii=False), encoding="utf-8")
    verdict = validate_feed(settings, "tax", AS_OF)
    assert gx_runs == ["tax", "tax"] and "gx_reused" not in verdict
    assert verdict["field_defect_values"] == 0 and verdict["rule_bad_rows"] == 0


@pytest.mark.parametrize("damage", ["entry", "result", "rows"])
def test_a_damaged_cache_entry_means_validating_again(tmp_path, gx_runs, damage):
    settings = settings_for(tmp_path)
    deliver(settings, "tax", DELIVERED, _with_bad_rows("tax"))
    ingest_feed(settings, "tax", AS_OF)
    first = validate_feed(settings, "tax", AS_OF)
    folder = settings.validation_cache_dir("tax")
    (entry,) = [p for p in folder.glob("*.json") if not p.name.endswith(".gx.json")]
    if damage == "entry":
        entry.write_text("{", encoding="utf-8")
    elif damage == "result":
        entry.with_suffix(".gx.json").unlink()
    else:  # a failing position beyond the delivery's rows
        data = json.loads(entry.read_text(encoding="utf-8"))
        data["results"][0]["unexpected"] = [10_000]
        entry.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    verdict = validate_feed(settings, "tax", AS_OF)
    assert gx_runs == ["tax", "tax"] and "gx_reused" not in verdict
    assert verdict == first


def test_suite_parameter_names_are_the_ones_the_rules_read():
    from pipelines.gx_suites import suite_parameter_names

    suite = {"expectations": [
        {"type": "a", "kwargs": {"column": "x", "max_value": {"$PARAMETER": "as_of"}}},
        {"type": "b", "kwargs": {"column": "y", "value_set": [{"$PARAMETER": "delivery_year"}]}},
        {"type": "c", "kwargs": {"column": "z"}, "meta": {"reason_zh": "{delivery_date}"}},
    ]}
    assert suite_parameter_names(suite) == {"as_of", "delivery_year"}


def test_the_cache_keeps_the_entries_of_a_feed_used_last(tmp_path, gx_runs):
    """Each new delivery adds an entry (and its GX result); only the KEEP_PER_FEED used last
    stay, and reusing an entry keeps it over entries made after it."""
    import os

    settings = settings_for(tmp_path)
    cache = settings.validation_cache_dir("tax")
    clock = iter(range(1_000, 100_000, 10))

    def night(n_rows: int) -> dict:
        shutil.rmtree(settings.landing / "tax", ignore_errors=True)
        deliver(settings, "tax", DELIVERED, rows("tax", n_rows))
        ingest_feed(settings, "tax", AS_OF)
        verdict = validate_feed(settings, "tax", AS_OF)
        for path in cache.glob("*"):   # the file clock moves on between nights
            if path.stat().st_mtime_ns > 10**17:   # written tonight (the clock is in 1970)
                t = next(clock)
                os.utime(path, (t, t))
        return verdict

    for k, n in enumerate((3, 4, 5)):              # A, B, C
        night(n)
        assert len(list(cache.glob("*"))) == 2 * (k + 1)
    assert "gx_reused" in night(3)                  # A again: reused, now the one used last
    night(6)                                        # D: B (used longest ago) goes
    assert len(list(cache.glob("*"))) == 2 * gx_reuse.KEEP_PER_FEED
    runs = len(gx_runs)
    assert "gx_reused" in night(3) and len(gx_runs) == runs          # A kept
    assert "gx_reused" not in night(4) and len(gx_runs) == runs + 1  # B validated again
