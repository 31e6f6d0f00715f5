"""`make bench`: the nightly pipeline from 10k to 1M enterprises and from 20 to 200 policies.

Each scale gets seeded demo deliveries and a policy set made by varying the
sample policies; then, on each warehouse asked for (SQLite, PostgreSQL), `mianshen
run --timings` runs the nightly pipeline twice on the same data (the first night
with an empty ledger, the second with nothing new for it) and records each stage's
wall time and peak memory (resident set, sampled). Between the nights the DuckDB
SQL formulation of the policies (benchmarks/duckdb_reference.py) runs on the
night's portrait, timed like the match stage and compared with its results; and
`mianshen simulate` times the sandbox (process start included). The Markdown
table is written to benchmarks/RESULTS.md and printed; the README carries it.
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
# What this 2-core, 24 GiB machine completes: 20 -> 200 policies at 100k enterprises, and 100k -> 1M
# enterprises with the district's own policies. 1M x 200 (~88M results) does not finish its lists (README).
DEFAULT_RUNS = "100000x20,100000x200,100000xsample,1000000xsample"


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


def night(env: dict, timings: Path) -> dict:
    """One `mianshen run` of the benchmark's date: each stage timed in that process, the whole run,
    and the ledger's size after it (the second night must leave it as the first did)."""
    wall = mianshen(["run", "--as-of", AS_OF.isoformat(), "--accept-drift", "--timings", str(timings)], env)
    measured = json.loads(timings.read_text(encoding="utf-8"))
    stages = measured["stages"]
    stages["match"]["results"] = measured["match_results"]
    return {"stages": stages, "run_seconds": round(wall, 1), "ledger_rows": ledger_rows(env)}


def ledger_rows(env: dict) -> int:
    import sqlalchemy as sa

    from pipelines.config import load_settings

    engine = sa.create_engine(load_settings(env).warehouse_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM ledger")).scalar_one()
    engine.dispose()
    return rows


def reference(env: dict, data: Path, policies: Path) -> dict:
    """The DuckDB SQL formulation of the policies on the portrait the night built, in its own
    process (benchmarks/duckdb_reference.py), compared with the night's matches.parquet."""
    report = data / "reference.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.duckdb_reference", "--portrait", str(data / "work" / "portrait" /
         f"{AS_OF}.parquet"), "--policies", str(policies), "--as-of", AS_OF.isoformat(),
         "--out", str(data / "reference.parquet"), "--matches", str(data / "output" / str(AS_OF) / "matches.parquet"),
         "--report", str(report)], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"duckdb_reference failed:\n{proc.stderr[-5000:]}")
    measured = json.loads(report.read_text(encoding="utf-8"))
    measured["policies"] = len(measured["policies"])   # results.json keeps the count (the ids are in the run's folder)
    return measured


def backend_name(warehouse: str | None) -> str:
    return "PostgreSQL" if warehouse else "SQLite"


def bench_scale(enterprises: int, policies: int | str, workdir: Path, warehouses: list[str | None],
                first_night_only: bool = False) -> list[dict]:
    """policies: a count of varied policies, or "sample" for data/policies as it is.
    warehouses: per item a PostgreSQL URL (a fresh schema is made in it), or None for the SQLite
    default; each gets its own data folder over the same deliveries and policy files.
    first_night_only: the first night alone (no reference, second night or sandbox): a size
    whose reference does not finish on the machine."""
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
    runs = []
    for warehouse in warehouses:
        backend = backend_name(warehouse)
        data = base / backend.lower()
        env = {**os.environ, "MIANSHEN_DATA": str(data), "MIANSHEN_LANDING": str(base / "landing"),
               "MIANSHEN_POLICIES": str(base / "policies"), "PYTHONPATH": str(ROOT)}
        if warehouse:
            env["MIANSHEN_WAREHOUSE_URL"] = fresh_schema(warehouse, f"bench_n{enterprises}_p{policies}")
        print(f"  {backend}: first night …", flush=True)
        first = night(env, data / "timings.json")
        if first_night_only:
            runs.append({"enterprises": enterprises, "policies": policies, "generate_seconds": round(generated, 1),
                         "warehouse": backend, **first, "sandbox_seconds": None,
                         "measured_on": date.today().isoformat()})
            continue
        print(f"  {backend}: DuckDB reference …", flush=True)
        ref = reference(env, data, base / "policies")
        # The same data again on the same warehouse and landing: nothing new for the ledger.
        print(f"  {backend}: second night …", flush=True)
        second = night(env, data / "timings-2.json")
        # 政策沙盘: a draft with sensitivity for 3 thresholds over the same portrait
        draft = ROOT / "benchmarks" / "drafts" / "WL-SW-2027-01.yaml"
        sandbox = mianshen(["simulate", str(draft), "--as-of", AS_OF.isoformat(), "--json"], env)
        runs.append({"enterprises": enterprises, "policies": policies, "generate_seconds": round(generated, 1),
                     "warehouse": backend, **first, "second_night": second, "reference": ref,
                     "sandbox_seconds": round(sandbox, 1), "measured_on": date.today().isoformat()})
    return runs


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


def _night_cells(night: dict) -> str:
    stages = night["stages"]
    total = sum(stages[s]["seconds"] for s in STAGES)
    match = stages["match"]
    rate = f"{(match.get('results') or 0) / match['seconds']:,.0f}" if match["seconds"] else "—"
    cells = " | ".join(f"{stages[s]['seconds']:.1f} / {stages[s]['peak_mib']:,}" for s in STAGES)
    peak = max(stages[s]["peak_mib"] for s in STAGES)
    return (f"{cells} | {total:.1f} | {night['run_seconds']:.1f} | {peak:,} | {match.get('results') or 0:,} | "
            f"{rate}")


def _reference_cells(r: dict) -> str:
    """DuckDB s / MiB, engine match ÷ DuckDB, rows compared and whether they agree."""
    ref = r.get("reference")
    if not ref:
        return "— | — | —"
    ratio = r["stages"]["match"]["seconds"] / ref["seconds"] if ref["seconds"] else float("nan")
    cmp = ref["comparison"]
    agreement = "all agree" if cmp["agree"] else f"{cmp['only_engine']:,} + {cmp['only_reference']:,} differ"
    return f"{ref['seconds']:.1f} / {ref['peak_mib']:,} | {ratio:.1f}× | {cmp['engine_rows']:,}: {agreement}"


def table(results: list[dict]) -> str:
    """Two rows per run: the first night (empty ledger) and the second (the same data again);
    the DuckDB reference on the first night's row (it ran on that night's portrait)."""
    head = ("| enterprises | policies | warehouse | night | " + " | ".join(f"{s} s / MiB" for s in STAGES)
            + " | stages total s | `mianshen run` s | peak MiB | stored results | match results/s"
            " | DuckDB s / MiB | match ÷ DuckDB | rows compared | sandbox s | measured |")
    rows = [head, "|" + "---|" * (len(STAGES) + 14)]
    for r in sorted(results, key=lambda r: (r["enterprises"], r["policies"], r.get("warehouse") != "SQLite")):
        key = f"| {r['enterprises']:,} | {r['policies']} | {r.get('warehouse', 'SQLite')} |"
        sandbox = "—" if r.get("sandbox_seconds") is None else f"{r['sandbox_seconds']:.1f}"
        rows.append(f"{key} 1st | {_night_cells(r)} | {_reference_cells(r)} | {sandbox} | {r['measured_on']} |")
        if r.get("second_night"):
            rows.append(f"{key} 2nd | {_night_cells(r['second_night'])} | — | — | — | — | {r['measured_on']} |")
    return "\n".join(rows)


BOTH = "sqlite,postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help='enterprises x policies, comma-separated: a count of varied policies, or "sample" '
                             f'for data/policies as it is (default {DEFAULT_RUNS})')
    parser.add_argument("--workdir", default=str(ROOT / "bench-out"))
    parser.add_argument("--warehouses", default="sqlite",
                        help='comma-separated: "sqlite" (the default file) and/or PostgreSQL URLs (a fresh schema '
                             'per run); every run is made on each')
    parser.add_argument("--both", action="store_const", const=BOTH, dest="warehouses",
                        help=f"SQLite and the local PostgreSQL: --warehouses {BOTH}")
    parser.add_argument("--first-night-only", action="store_true",
                        help="run the first night alone (no DuckDB reference, second night or sandbox)")
    parser.add_argument("--append", action="store_true",
                        help="keep the runs recorded in benchmarks/results.json (a run of the same size and "
                             "warehouse is replaced) and print the table of all of them")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    runs = [(int(n), p if p == "sample" else int(p)) for n, p in (spec.split("x") for spec in args.runs.split(","))]
    warehouses = [None if w == "sqlite" else w for w in args.warehouses.split(",")]
    recorded = ROOT / "benchmarks" / "results.json"
    results = json.loads(recorded.read_text(encoding="utf-8")) if args.append and recorded.exists() else []
    for n, p in runs:
        print(f"benchmark: {n:,} enterprises × {p} policies …", flush=True)
        for run in bench_scale(n, p, workdir, warehouses, args.first_night_only):
            print(json.dumps(run, ensure_ascii=False), flush=True)
            key = (run["enterprises"], run["policies"], run["warehouse"])
            results = [r for r in results if (r["enterprises"], r["policies"], r.get("warehouse")) != key] + [run]
            recorded.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    text = (f"Measured on {machine()} (each run's date in the last column).\n\n" + table(results) + "\n")
    (ROOT / "benchmarks" / "RESULTS.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
