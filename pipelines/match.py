"""The match stage (I/O edge): portrait + policy files + accepted name lists -> matches.parquet."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines import engine, files as files_lib, policies as policy_lib
from pipelines.config import Settings

NAME_LIST_COLUMNS = ("uscc", "name", "amount", "note", "source")


NAME_LISTS_META = b"mianshen.name_lists"


def name_list_files(settings: Settings, policy_ids: list[str] | None = None) -> dict[str, list[Path]]:
    """policy id -> its accepted name-list files (oldest name first)."""
    root = settings.namelists
    out: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
        if policy_ids is not None and folder.name not in policy_ids:
            continue
        if files := sorted(folder.glob("*.parquet")):
            out[folder.name] = files
    return out


def name_list_manifest(files: dict[str, list[Path]]) -> list[dict]:
    """The name-list files that joined a run, with their hashes (the run's recorded inputs)."""
    return [{"name": f"{policy_id}/{path.name}", "path": str(path), "sha256": files_lib.sha256_file(path)}
            for policy_id, paths in files.items() for path in paths]


def load_name_lists(settings: Settings, policy_ids: list[str] | None = None) -> dict[str, pa.Table]:
    """Accepted name lists per policy id; for one code in several files the newest received_at wins."""
    return read_name_lists(name_list_files(settings, policy_ids))


def name_lists_used(settings: Settings, as_of: dt.date) -> list[dict]:
    """The name-list files (name, path, sha256) that joined the night's results."""
    path = settings.matches_path(as_of)
    if not path.exists():
        return []
    raw = (pq.read_schema(path).metadata or {}).get(NAME_LISTS_META)
    return json.loads(raw) if raw else []


def read_name_lists(files: dict[str, list[Path]]) -> dict[str, pa.Table]:
    out: dict[str, pa.Table] = {}
    for policy_id, paths in files.items():
        tables = [_normalise_list(pq.read_table(f)) for f in paths]
        table = pa.concat_tables(tables)
        # Oldest first, so the engine's "last row per code wins" keeps the newest delivery.
        table = table.sort_by([("received_at", "ascending")])
        out[policy_id] = table.select(list(NAME_LIST_COLUMNS))
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
    files_lib.atomic_write_parquet(path, table)


def write_json_atomic(data, path: Path) -> None:
    files_lib.atomic_write_json(path, data)


def summarise(results: pa.Table, active: list[policy_lib.Policy]) -> list[dict]:
    """Per policy in force: counts per outcome, eligible total (string, 元), over budget.
    Aggregated in one pass over the results, not one filter per policy (200 policies)."""
    counts: dict[str, dict[str, int]] = {p.id: {o: 0 for o in engine.STORED} for p in active}
    for row in results.group_by(["policy_id", "outcome"]).aggregate([("outcome", "count")]).to_pylist():
        if row["policy_id"] in counts:
            counts[row["policy_id"]][row["outcome"]] = row["outcome_count"]
    eligible = results.filter(pc.equal(results.column("outcome"), "eligible"))
    totals = {r["policy_id"]: r["amount_sum"]
              for r in eligible.group_by("policy_id").aggregate([("amount", "sum")]).to_pylist()}
    over = {r["policy_id"]: r["over_budget_any"]
            for r in results.group_by("policy_id").aggregate([("over_budget", "any")]).to_pylist()}
    out = []
    for p in active:
        total = totals.get(p.id)
        out.append({
            "policy_id": p.id, "name": p.name, "department": p.department, "kind": p.kind,
            "period": p.period, "counts": counts[p.id],
            "eligible_amount": str(total if total is not None else Decimal("0.00")),
            "budget": None if p.budget is None else str(p.budget),
            "budget_rule": p.budget_rule if p.budget is not None else None,
            "over_budget": bool(over.get(p.id) or False),
        })
    return out


def _active(settings: Settings, as_of: dt.date):
    loaded, errors = policy_lib.load_dir(settings.policies)
    active = sorted(policy_lib.in_force(loaded, as_of), key=lambda p: p.id)
    return loaded, list(errors), active


def _errors_json(errors) -> list[dict]:
    return [{"file": e.file, "line": e.line, "key": e.key, "message": e.message, "warning": e.warning}
            for e in errors]


def _finish(settings: Settings, as_of: dt.date, results: pa.Table, loaded, errors, active, run_errors,
            enterprises: int, name_list_rows: dict[str, int], name_lists_used: list[dict]) -> dict:
    """Write policy_errors.json and matches.parquet (carrying the name-list files it used, for
    the run's audit); the summary the DAG and the report read."""
    errors_path = settings.policy_errors_path(as_of)
    # A policy that failed at run time is skipped and reported with the load errors.
    errors = list(errors) + list(run_errors)
    failed = {e.key for e in run_errors}
    ran = [p for p in active if p.id not in failed]
    write_json_atomic(_errors_json(errors), errors_path)
    out = settings.matches_path(as_of)
    meta = {NAME_LISTS_META: json.dumps(name_lists_used, ensure_ascii=False)}
    write_atomic(results.replace_schema_metadata(meta), out)
    return {
        "as_of": str(as_of),
        "matches": str(out),
        "rows": results.num_rows,
        "enterprises": enterprises,
        "policies_loaded": len(loaded),
        "policies_in_force": len(active),
        "policy_files": policy_lib.manifest(loaded),
        "policy_errors": len(errors),
        "bad_policy_files": sorted({Path(e.file).name for e in errors if not e.warning}),
        "policy_errors_file": str(errors_path),
        "name_lists": name_list_rows,
        "policies": summarise(results, ran),
    }


def run(settings: Settings, as_of: dt.date) -> dict:
    """Evaluate every policy in force on `as_of`; write output/<as_of>/matches.parquet."""
    portrait = pq.read_table(settings.portrait_path(as_of))
    loaded, errors, active = _active(settings, as_of)
    list_files = name_list_files(settings, [p.id for p in active if p.kind == "name_list"])
    name_lists = read_name_lists(list_files)
    run_errors: list[policy_lib.PolicyError] = []
    results = engine.evaluate(portrait, active, as_of, name_lists, errors=run_errors)
    return _finish(settings, as_of, results, loaded, errors, active, run_errors,
                   portrait.num_rows, {k: v.num_rows for k, v in name_lists.items()},
                   name_list_manifest(list_files))


# ---------------------------------------------------------------- shards (scale-out on Airflow)
#
# Groups are per enterprise, so a shard of enterprises evaluates conditions, guards, amounts and
# exclusive groups on its own; budgets are per policy over all enterprises, so the merge applies
# them. A shard's file carries what the merge needs (its policy files and run-time errors) in its
# Parquet metadata, so the merge never reads the portrait.

SHARD_META = b"mianshen.shard"


def _check_shard(shard: int, shards: int) -> None:
    if not (isinstance(shards, int) and shards >= 1 and isinstance(shard, int) and 0 <= shard < shards):
        raise ValueError(f"shard {shard!r} of {shards!r}: need 0 <= shard < shards")


def shard_range(settings: Settings, as_of: dt.date, shard: int, shards: int) -> tuple[str | None, str | None]:
    """The codes [lo, hi) of one shard (None: open end): the portrait's codes in order, cut into
    `shards` runs of equal length. Ranges, not hashes, so a shard reads only its own row groups
    of the portrait (written sorted by code, in row groups); every code, in the portrait or
    only on a name list, falls in exactly one range; a null code goes to shard 0."""
    codes = pq.read_table(settings.portrait_path(as_of), columns=["uscc"]).column("uscc")
    codes = codes.drop_null()
    codes = codes.take(pc.sort_indices(codes))
    n = len(codes)
    if n == 0:
        return (None, None) if shard == 0 else ("", "")

    def cut(k: int) -> str | None:
        return codes[k * n // shards].as_py() if 0 < k < shards else None

    return cut(shard), cut(shard + 1)


def _range_filter(lo: str | None, hi: str | None, column: str = "uscc"):
    """The Arrow dataset expression for lo <= code < hi (a null code only in the first shard);
    None for the whole line."""
    if lo is None and hi is None:
        return None
    field = ds.field(column)
    expr = None
    if lo is not None:
        expr = field >= lo
    if hi is not None:
        expr = (field < hi) if expr is None else expr & (field < hi)
    if lo is None:
        expr = field.is_null() if expr is None else (expr | field.is_null())
    return expr


def _in_range(table: pa.Table, lo: str | None, hi: str | None) -> pa.Table:
    expr = _range_filter(lo, hi)
    return table if expr is None else table.filter(expr)


def run_shard(settings: Settings, as_of: dt.date, shard: int, shards: int) -> str:
    """Evaluate the portrait rows (and name-list rows) of one shard, without budgets; write
    work/match_shards/<as_of>/shard-<k>-of-<n>.parquet atomically and return its path."""
    _check_shard(shard, shards)
    lo, hi = shard_range(settings, as_of, shard, shards)
    # Only the shard's rows are read: the filter skips the portrait's other row groups.
    portrait = pq.read_table(settings.portrait_path(as_of), filters=_range_filter(lo, hi))
    loaded, _, active = _active(settings, as_of)
    list_files = name_list_files(settings, [p.id for p in active if p.kind == "name_list"])
    name_lists = {k: _in_range(v, lo, hi) for k, v in read_name_lists(list_files).items()}
    run_errors: list[policy_lib.PolicyError] = []
    results = engine.evaluate(portrait, active, as_of, name_lists, errors=run_errors, apply_budgets=False)
    meta = {"as_of": str(as_of), "shard": shard, "shards": shards, "range": [lo, hi],
            "enterprises": portrait.num_rows,
            "policy_files": policy_lib.manifest(loaded), "run_errors": _errors_json(run_errors),
            "name_lists": {k: v.num_rows for k, v in name_lists.items()},
            "name_list_files": name_list_manifest(list_files)}
    path = settings.shard_path(as_of, shard, shards)
    write_atomic(results.replace_schema_metadata({SHARD_META: json.dumps(meta, ensure_ascii=False)}), path)
    return str(path)


def _runs(ids: pa.ChunkedArray) -> dict[str, tuple[int, int]]:
    """policy id -> (offset, length) of its rows in a table sorted by policy id."""
    encoded = pc.run_end_encode(ids.combine_chunks())
    ends = encoded.run_ends.to_pylist()
    starts = [0] + ends[:-1]
    return {v: (a, b - a) for v, a, b in zip(encoded.values.to_pylist(), starts, ends)}


def _policy_major(tables: list[pa.Table]) -> pa.Table:
    """The shards' rows in `evaluate`'s own order (policies in id order, each policy's rows
    in code order), by slicing rather than sorting: each shard is in that order already and
    holds a code range above the previous shard's. Slices are zero-copy, so no column is
    ever concatenated (a province's evidence column is larger than one string array holds)."""
    if len(tables) == 1:
        return tables[0]
    runs = [_runs(t.column("policy_id")) for t in tables]
    parts = [t.slice(*r[pid]) for pid in sorted(set().union(*runs)) for t, r in zip(tables, runs) if pid in r]
    return pa.concat_tables(parts) if parts else tables[0].slice(0, 0)


def merge(settings: Settings, as_of: dt.date, shards: int) -> dict:
    """Concatenate the shards' results, apply budgets per policy over all of them (as `evaluate`
    does), write output/<as_of>/matches.parquet; the same summary as `run`."""
    _check_shard(0, shards)
    loaded, errors, active = _active(settings, as_of)
    manifest = policy_lib.manifest(loaded)
    tables, run_errors = [], {}
    enterprises, list_rows, used = 0, {}, {}
    for k in range(shards):
        path = settings.shard_path(as_of, k, shards)
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(SHARD_META)
        meta = json.loads(raw) if raw else None
        if not meta or meta.get("as_of") != str(as_of) or meta.get("shards") != shards or meta.get("shard") != k:
            raise RuntimeError(f"{path}: not shard {k} of {shards} for {as_of}")
        if meta["policy_files"] != manifest:
            raise RuntimeError(f"{path}: the policy files changed after the shard ran; rerun the shards")
        enterprises += meta["enterprises"]
        used.update((f["name"], f) for f in meta["name_list_files"])
        for name, rows in meta["name_lists"].items():
            list_rows[name] = list_rows.get(name, 0) + rows
        for e in meta["run_errors"]:
            run_errors.setdefault(e["key"], policy_lib.PolicyError(e["file"], e["line"], e["key"], e["message"]))
        tables.append(table.replace_schema_metadata(None))
    # Errors in policy order, as `evaluate` reports them; a policy that failed in any shard is
    # skipped in all of them.
    order = {p.id: i for i, p in enumerate(active)}
    failed = sorted(run_errors.values(), key=lambda e: order.get(e.key, len(order)))
    if failed:
        skip = pa.array([e.key for e in failed])
        tables = [t.filter(pc.invert(pc.is_in(t.column("policy_id"), value_set=skip))) for t in tables]
    results = _policy_major(tables) if tables else engine.RESULT_SCHEMA.empty_table()
    results = engine.budget_all(results, [p for p in active if p.id not in run_errors])
    return _finish(settings, as_of, results, loaded, errors, active, failed, enterprises, list_rows,
                   [used[name] for name in sorted(used)])
