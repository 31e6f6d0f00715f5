"""`mianshen run`: the nightly pipeline in one process, and its per-stage meter."""
from __future__ import annotations

import json
import shutil
import time
from datetime import date, datetime, timezone

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from pipelines import cli, demo_data, warehouse
from pipelines.nightly import StageMeter
from tests.conftest import ROOT

AS_OF = date(2026, 11, 26)


def test_the_meter_records_each_stages_time_and_memory_peak():
    meter = StageMeter()
    with meter.stage("light"):
        time.sleep(0.1)
    with meter.stage("heavy"):
        block = bytearray(400 * 2**20)       # 400 MiB, touched so that it is resident
        block[::4096] = b"x" * len(block[::4096])
        time.sleep(0.1)
        del block
    assert meter.stages["light"]["seconds"] >= 0.1
    assert meter.stages["heavy"]["peak_mib"] - meter.stages["light"]["peak_mib"] >= 300


@pytest.mark.slow
def test_mianshen_run_writes_its_timings(tmp_path, monkeypatch):
    demo_data.generate(tmp_path / "landing", AS_OF, 300, 7)
    shutil.copytree(ROOT / "data" / "policies", tmp_path / "policies")
    monkeypatch.setenv("MIANSHEN_DATA", str(tmp_path))
    monkeypatch.setenv("MIANSHEN_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("MIANSHEN_POLICIES", str(tmp_path / "policies"))
    timings = tmp_path / "timings.json"
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    assert cli.main(["run", "--as-of", str(AS_OF), "--accept-drift", "--timings", str(timings)]) == 0
    after = datetime.now(timezone.utc).replace(tzinfo=None)
    measured = json.loads(timings.read_text(encoding="utf-8"))
    assert list(measured["stages"]) == ["ingest", "validate", "portrait", "match", "ledger_outputs"]
    assert all(s["seconds"] > 0 and s["peak_mib"] > 0 for s in measured["stages"].values())
    matches = pq.read_metadata(tmp_path / "output" / str(AS_OF) / "matches.parquet").num_rows
    assert measured["match_results"] == matches > 0
    # the run's audit row: started when the run started, not when the row was written at its end
    with warehouse.connect(f"sqlite:///{tmp_path / 'work' / 'warehouse.db'}").connect() as conn:
        started, finished = conn.execute(sa.select(warehouse.runs.c.started_at, warehouse.runs.c.finished_at)
                                         .where(warehouse.runs.c.run_id == f"cli__{AS_OF}")).one()
    assert before <= started < finished <= after
    assert started - before < finished - started



@pytest.mark.slow
def test_feeds_in_worker_processes_give_what_one_process_gives(tmp_path):
    """`mianshen run` ingests and validates the feeds in worker processes, as the DAG's parallel
    tasks do: the same verdicts, quarantine lists and validated rows as one feed after the
    other, and a Data Docs index that links every feed."""
    from dataclasses import replace

    from pipelines import nightly
    from pipelines.config import load_settings
    from pipelines.contracts import FEED_ORDER

    demo_data.generate(tmp_path / "landing", AS_OF, 300, 7)
    outputs = {}
    for workers in (1, 2):
        base = tmp_path / f"w{workers}"
        settings = replace(load_settings({"MIANSHEN_DATA": str(base), "MIANSHEN_LANDING": str(tmp_path / "landing"),
                                          "MIANSHEN_POLICIES": str(ROOT / "data" / "policies")}),
                           feed_workers=workers)
        with nightly.feed_pool(settings) as pool:
            assert (pool is None) == (workers == 1)
            nightly.ingest_all(settings, AS_OF, pool)
            verdicts = nightly.validate_all(settings, AS_OF, accept_drift=True, pool=pool)
        quality = settings.quality_dir(AS_OF)
        index = (settings.data_docs_dir(AS_OF) / "index.html").read_text(encoding="utf-8")
        assert all(f"validations/{feed}/" in index for feed in FEED_ORDER), workers
        outputs[workers] = (
            json.dumps(verdicts, ensure_ascii=False, sort_keys=True).replace(str(base), "<data>"),
            {p.name: p.read_bytes() for p in sorted(quality.glob("*_quarantine.csv"))},
            {f: pq.read_table(verdicts[f]["validated_path"]) if verdicts[f].get("validated_path") else None
             for f in FEED_ORDER})
    assert outputs[1][0] == outputs[2][0] and outputs[1][1] == outputs[2][1]
    assert all((a is None and b is None) or a.equals(b) for a, b in zip(outputs[1][2].values(), outputs[2][2].values()))


def test_a_night_whose_warehouse_is_unreachable_stops_before_reading_the_feeds(tmp_path, monkeypatch):
    from pipelines import nightly
    from pipelines.config import load_settings

    demo_data.generate(tmp_path / "landing", AS_OF, 300, 7)
    env = {"MIANSHEN_DATA": str(tmp_path), "MIANSHEN_LANDING": str(tmp_path / "landing"),
           "MIANSHEN_WAREHOUSE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/test"}   # nobody listens
    settings = load_settings(env)
    with pytest.raises(sa.exc.OperationalError):
        nightly.run(settings, AS_OF, accept_drift=True)
    assert not settings.ingest_summary_path("registry", AS_OF).exists()
