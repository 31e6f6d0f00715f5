"""The match stage (I/O edge): portrait + policy files + accepted name lists -> matches.parquet."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import contracts, engine, files, policies as policy_lib
from pipelines.config import Settings

NAME_LIST_COLUMNS = ("uscc", "name", "amount", "note", "source")


def namelist_dir(settings: Settings) -> Path:
    return settings.work / "namelists"


def load_name_lists(settings: Settings, policy_ids: list[str] | None = None) -> dict[str, pa.Table]:
    """Accepted name lists per policy id; for one code in several files the newest received_at wins."""
    root = namelist_dir(settings)
    out: dict[str, pa.Table] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if policy_ids is not None and folder.name not in policy_ids:
            continue
        files = sorted(folder.glob("*.parquet"))
        if not files:
            continue
        tables = [_normalise_list(pq.read_table(f)) for f in files]
        table = pa.concat_tables(tables)
        # Oldest first, so the engine's "last row per code wins" keeps the newest delivery.
        table = table.sort_by([("received_at", "ascending")])
        out[folder.name] = table.select(list(NAME_LIST_COLUMNS))
    return out


def _normalise_list(table: pa.Table) -> pa.Table:
    n = table.num_rows
    cols = {}
    for name, type_ in zip(engine.NAME_LIST_SCHEMA.names, engine.NAME_LIST_SCHEMA.types):
        cols[name] = table.column(name).cast(type_) if name in table.column_names else pa.nulls(n, type_)
    received = table.column("received_at") if "received_at" in table.column_names else pa.nulls(n, pa.timestamp("s"))
    cols["received_at"] = received.cast(pa.timestamp("us"))
    return pa.table(cols)


def write_atomic(table: pa.Table, path: Path) -> None:
    files.atomic_write_parquet(path, table)


def write_json_atomic(data, path: Path) -> None:
    files.atomic_write_json(path, data)


def summarise(results: pa.Table, active: list[policy_lib.Policy]) -> list[dict]:
    """Per policy in force: counts per outcome, eligible total (string, 元), over budget."""
    out = []
    ids = results.column("policy_id")
    for p in active:
        part = results.filter(pc.equal(ids, pa.scalar(p.id)))
        counts = {o: 0 for o in engine.STORED}
        if part.num_rows:
            for row in part.group_by("outcome").aggregate([("outcome", "count")]).to_pylist():
                counts[row["outcome"]] = row["outcome_count"]
        eligible = part.filter(pc.equal(part.column("outcome"), pa.scalar("eligible")))
        total = pc.sum(eligible.column("amount")).as_py() if eligible.num_rows else None
        out.append({
            "policy_id": p.id, "name": p.name, "department": p.department, "kind": p.kind,
            "period": p.period, "counts": counts,
            "eligible_amount": str(total if total is not None else Decimal("0.00")),
            "budget": None if p.budget is None else str(p.budget),
            "budget_rule": p.budget_rule if p.budget is not None else None,
            "over_budget": bool(pc.any(part.column("over_budget")).as_py()) if part.num_rows else False,
        })
    return out


def run(settings: Settings, as_of: dt.date) -> dict:
    """Evaluate every policy in force on `as_of`; write output/<as_of>/matches.parquet."""
    portrait_path = settings.portraits / f"{as_of}.parquet"
    portrait = pq.read_table(portrait_path)
    loaded, errors = policy_lib.load_dir(settings.policies)
    run_dir = settings.run_dir(as_of)
    errors_path = run_dir / "policy_errors.json"
    active = sorted(policy_lib.in_force(loaded, as_of), key=lambda p: p.id)
    name_lists = load_name_lists(settings, [p.id for p in active if p.kind == "name_list"])
    run_errors: list[policy_lib.PolicyError] = []
    results = engine.evaluate(portrait, active, as_of, name_lists, errors=run_errors)
    # A policy that failed at run time is skipped and reported with the load errors.
    errors = list(errors) + run_errors
    failed = {e.key for e in run_errors}
    ran = [p for p in active if p.id not in failed]
    write_json_atomic([{"file": e.file, "line": e.line, "key": e.key, "message": e.message} for e in errors],
                      errors_path)
    out = run_dir / "matches.parquet"
    write_atomic(results, out)
    return {
        "as_of": str(as_of),
        "matches": str(out),
        "rows": results.num_rows,
        "enterprises": portrait.num_rows,
        "policies_loaded": len(loaded),
        "policies_in_force": len(active),
        "policy_files": policy_lib.manifest(loaded),
        "policy_errors": len(errors),
        "bad_policy_files": sorted({Path(e.file).name for e in errors}),
        "policy_errors_file": str(errors_path),
        "name_lists": {k: v.num_rows for k, v in name_lists.items()},
        "policies": summarise(results, ran),
    }
