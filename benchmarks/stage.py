"""Run one stage of the nightly pipeline in this process and print its wall
time and this process's peak memory as JSON (the benchmark runs each stage in
a fresh process so that peak memory belongs to that stage alone)."""
from __future__ import annotations

import json
import resource
import sys
import time
from datetime import date

from pipelines import nightly
from pipelines.config import load_settings


def main(stage: str, as_of_text: str) -> None:
    settings = load_settings()
    as_of = date.fromisoformat(as_of_text)
    started = time.perf_counter()
    result = None
    if stage == "ingest":
        nightly.ingest_all(settings, as_of)
    elif stage == "validate":
        nightly.validate_all(settings, as_of, accept_drift=True)
        from pipelines import validate

        validate.gate(settings, as_of)
    elif stage == "portrait":
        from pipelines import portrait

        portrait.build(settings, as_of)
    elif stage == "match":
        from pipelines import match

        result = match.run(settings, as_of)
    elif stage == "ledger_outputs":
        from pipelines import ledger, report

        ledger.ledger_and_outputs(settings, as_of, f"bench__{as_of}")
        report.write(settings, as_of, f"bench__{as_of}")
    elif stage == "sandbox":
        from pathlib import Path

        from pipelines import sandbox

        draft = Path(__file__).parent / "drafts" / "WL-SW-2027-01.yaml"
        result = sandbox.simulate(settings, draft, as_of)
    else:
        raise SystemExit(f"unknown stage {stage}")
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"stage": stage, "seconds": round(seconds, 2), "peak_mib": round(peak_kib / 1024)}
    if stage == "match" and isinstance(result, dict):
        out["results"] = result.get("rows")
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
