"""`make bench`: the nightly pipeline from 10k to 1M enterprises and from 20 to 200 policies.

Each scale gets seeded demo deliveries and a policy set made by varying the
sample policies; then `mianshen run --timings` runs the nightly pipeline and
records each stage's wall time and peak memory (resident set, sampled), and
`mianshen simulate` times the sandbox (process start included). The Markdown table is written to
benchmarks/RESULTS.md and printed; the README carries it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "validate", "portrait", "match", "ledger_outputs")
AS_OF = date(2026, 11, 26)
# What this 2-core, 24 GiB machine completes: 20 -> 200 policies at 10k enterprises, and 100k -> 1M
# enterprises with the district's own policies. 1M x 200 stores ~88M results with evidence (see the README).
DEFAULT_RUNS = "10000x20,10000x200,100000xsample,1000000xsample"


def vary_policies(source: Path, target: Path, count: int) -> int:
    """`count` policies: the sample condition policies with ids suffixed and
    numeric thresholds scaled by a few per cent, so each is a distinct policy."""
    target.mkdir(parents=True, exist_ok=True)
    samples = []
    for path in sorted(source.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if doc.get("kind") == "condition":
            samples.append(path.read_text(encoding="utf-8"))
    written = 0
    variant = 0
    while written < count:
        for text in samples:
            if written >= count:
                break
            doc = yaml.safe_load(text)
            factor = Decimal(100 + (variant % 9) - 4) / 100
            doc["id"] = f"{doc['id']}-V{variant:03d}"
            doc.pop("exclusive_group", None) if variant % 3 else None
            doc["conditions"] = _scale(doc.get("conditions"), factor)
            (target / f"{doc['id']}.yaml").write_text(
                yaml.dump(_plain(doc), Dumper=_Dumper, allow_unicode=True, sort_keys=False), encoding="utf-8")
            written += 1
        variant += 1
    return written


class _Dumper(yaml.SafeDumper):
    """Writes a Decimal as its exact digits, unquoted: the policy loader reads
    the scalar text back as the same Decimal (no float on the way)."""


_Dumper.add_representer(Decimal, lambda dumper, d: dumper.represent_scalar("tag:yaml.org,2002:float", str(d)))


def _scale(node, factor):
    if isinstance(node, list):
        return [_scale(n, factor) for n in node]
    if isinstance(node, dict):
        if "field" in node and isinstance(node.get("value"), (int, float)) and not isinstance(node["value"], bool):
            value = Decimal(str(node["value"])) * factor
            return {**node, "value": value.quantize(Decimal("0.01"))}
        return {k: _scale(v, factor) for k, v in node.items()}
    return node


def _plain(obj):
    if isinstance(obj, Decimal):
        return obj if obj != obj.to_integral() else int(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, date):
        return obj.isoformat()
    return obj


def mianshen(args: list[str], env: dict) -> float:
    """Run `mianshen <args>` in a fresh process; its wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"mianshen {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return time.perf_counter() - started


def fresh_schema(admin_url: str, name: str) -> str:
    """A new, empty PostgreSQL schema for one scale; the URL whose search_path is it."""
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    admin.dispose()
    return f"{admin_url}?options=-csearch_path%3D{name}"


def bench_scale(enterprises: int, policies: int | str, workdir: Path, warehouse: str | None = None) -> dict:
    """policies: a count of varied policies, or "sample" for data/policies as it is.
    warehouse: a PostgreSQL URL (a fresh schema is made in it), or None for the SQLite default."""
    from pipelines import demo_data

    base = workdir / f"n{enterprises}_p{policies}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started = time.perf_counter()
    demo_data.generate(base / "landing", AS_OF, enterprises, 42)
    generated = time.perf_counter() - started
    if policies == "sample":
        shutil.copytree(ROOT / "data" / "policies", base / "policies")
        policies = len(list((base / "policies").glob("*.yaml")))
    else:
        vary_policies(ROOT / "data" / "policies", base / "policies", int(policies))
    env = {**os.environ, "MIANSHEN_DATA": str(base), "MIANSHEN_LANDING": str(base / "landing"),
           "MIANSHEN_POLICIES": str(base / "policies"), "PYTHONPATH": str(ROOT)}
    if warehouse:
        env["MIANSHEN_WAREHOUSE_URL"] = fresh_schema(warehouse, f"bench_n{enterprises}_p{policies}")
    # The nightly pipeline as an operator runs it, each stage timed in that process.
    timings = base / "timings.json"
    wall = mianshen(["run", "--as-of", AS_OF.isoformat(), "--accept-drift", "--timings", str(timings)], env)
    measured = json.loads(timings.read_text(encoding="utf-8"))
    stages = measured["stages"]
    stages["match"]["results"] = measured["match_results"]
    # 政策沙盘: a draft with sensitivity for 3 thresholds over the same portrait
    draft = ROOT / "benchmarks" / "drafts" / "WL-SW-2027-01.yaml"
    sandbox = mianshen(["simulate", str(draft), "--as-of", AS_OF.isoformat(), "--json"], env)
    return {"enterprises": enterprises, "policies": policies, "generate_seconds": round(generated, 1),
            "warehouse": "PostgreSQL" if warehouse else "SQLite",
            "stages": stages, "run_seconds": round(wall, 1), "sandbox_seconds": round(sandbox, 1)}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}"


def table(results: list[dict]) -> str:
    head = ("| enterprises | policies | warehouse | " + " | ".join(f"{s} s / MiB" for s in STAGES)
            + " | stages total s | `mianshen run` s | peak MiB | stored results | match results/s | sandbox s |")
    rows = [head, "|" + "---|" * (len(STAGES) + 9)]
    for r in results:
        total = sum(r["stages"][s]["seconds"] for s in STAGES)
        match = r["stages"]["match"]
        rate = f"{(match.get('results') or 0) / match['seconds']:,.0f}" if match["seconds"] else "—"
        cells = " | ".join(f"{r['stages'][s]['seconds']:.1f} / {r['stages'][s]['peak_mib']:,}" for s in STAGES)
        peak = max(r["stages"][s]["peak_mib"] for s in STAGES)
        rows.append(f"| {r['enterprises']:,} | {r['policies']} | {r.get('warehouse', 'SQLite')} | {cells} | {total:.1f} | {r['run_seconds']:.1f} | "
                    f"{peak:,} | {match.get('results') or 0:,} | {rate} | {r['sandbox_seconds']:.1f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help='enterprises x policies, comma-separated: a count of varied policies, or "sample" '
                             f'for data/policies as it is (default {DEFAULT_RUNS})')
    parser.add_argument("--workdir", default=str(ROOT / "bench-out"))
    parser.add_argument("--warehouse", default="sqlite",
                        help='"sqlite" (the default file) or a PostgreSQL URL (a fresh schema per run)')
    parser.add_argument("--append", action="store_true",
                        help="keep the runs recorded in benchmarks/results.json (a run of the same size and "
                             "warehouse is replaced) and print the table of all of them")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    runs = [(int(n), p if p == "sample" else int(p)) for n, p in (spec.split("x") for spec in args.runs.split(","))]
    recorded = ROOT / "benchmarks" / "results.json"
    results = json.loads(recorded.read_text(encoding="utf-8")) if args.append and recorded.exists() else []
    warehouse = None if args.warehouse == "sqlite" else args.warehouse
    for n, p in runs:
        print(f"benchmark: {n:,} enterprises × {p} policies …", flush=True)
        run = bench_scale(n, p, workdir, warehouse)
        print(json.dumps(run, ensure_ascii=False), flush=True)
        key = (run["enterprises"], run["policies"], run["warehouse"])
        results = [r for r in results if (r["enterprises"], r["policies"], r.get("warehouse")) != key] + [run]
        recorded.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    text = (f"Measured {date.today()} on {machine()}.\n\n" + table(results) + "\n")
    (ROOT / "benchmarks" / "RESULTS.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
