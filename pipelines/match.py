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

from pipelines import engine, evidence as evidence_lib, files as files_lib, policies as policy_lib
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


def write_json_atomic(data, path: Path) -> None:
    files_lib.atomic_write_json(path, data)


class Tally:
    """Per policy: counts per outcome, eligible total, over budget; added to one policy's
    results at a time as they are written (the night's results are never held together)."""

    def __init__(self):
        self.counts: dict[str, dict[str, int]] = {}
        self.totals: dict[str, Decimal] = {}
        self.over: dict[str, bool] = {}
        self.rows = 0

    def add(self, policy_id: str, part: pa.Table) -> pa.Table:
        counts = self.counts.setdefault(policy_id, {o: 0 for o in engine.STORED})
        for row in part.group_by("outcome").aggregate([("outcome", "count")]).to_pylist():
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + row["outcome_count"]
        eligible = pc.equal(part.column("outcome"), "eligible")
        total = pc.sum(pc.if_else(eligible, part.column("amount"), pa.scalar(None, engine.AMOUNT))).as_py()
        self.totals[policy_id] = self.totals.get(policy_id, Decimal("0.00")) + (total or Decimal("0.00"))
        self.over[policy_id] = self.over.get(policy_id, False) or bool(pc.any(part.column("over_budget")).as_py())
        self.rows += part.num_rows
        return part

    def summary(self, active: list[policy_lib.Policy]) -> list[dict]:
        out = []
        for p in active:
            out.append({
                "policy_id": p.id, "name": p.name, "department": p.department, "kind": p.kind,
                "period": p.period, "counts": self.counts.get(p.id, {o: 0 for o in engine.STORED}),
                "eligible_amount": str(self.totals.get(p.id, Decimal("0.00"))),
                "budget": None if p.budget is None else str(p.budget),
                "budget_rule": p.budget_rule if p.budget is not None else None,
                "over_budget": self.over.get(p.id, False),
            })
        return out


def write_results(path: Path, stream, templates: dict, meta: dict[bytes, str], before_publish=None) -> Tally:
    """Write (policy id, results) pairs to `path` as they come, one row group per policy, with
    the evidence templates and `meta` in the footer; their tally. `before_publish(tally)` runs
    when every row is written, before the file is published."""
    tally = Tally()
    schema = evidence_lib.with_templates(engine.RESULT_SCHEMA.empty_table(), templates).schema
    schema = schema.with_metadata({**schema.metadata, **{k: v.encode("utf-8") for k, v in meta.items()}})
    tallied = (tally.add(pid, part) for pid, part in stream)
    files_lib.atomic_write_parquet_stream(path, schema, (part for part in tallied if part.num_rows),
                                          (lambda: before_publish(tally)) if before_publish else None,
                                          write_statistics=with_statistics(schema))
    return tally


def with_statistics(schema: pa.Schema) -> list[str]:
    """The columns whose min/max statistics a results file keeps: not those of long text no
    reader filters by (cut short anyway), which are a tenth of the writer's time."""
    return [n for n in schema.names if n not in {"name", "evidence_actual", "evidence_result", "reason"}]


def _active(settings: Settings, as_of: dt.date):
    loaded, errors = policy_lib.load_dir(settings.policies)
    active = sorted(policy_lib.in_force(loaded, as_of), key=lambda p: p.id)
    return loaded, list(errors), active


def _errors_json(errors) -> list[dict]:
    return [{"file": e.file, "line": e.line, "key": e.key, "message": e.message, "warning": e.warning}
            for e in errors]


def _finish(settings: Settings, as_of: dt.date, stream, loaded, errors, active, run_errors: list,
            enterprises: int, name_list_rows: dict[str, int], name_lists_used: list[dict]) -> dict:
    """Write policy_errors.json and matches.parquet from the stream of (policy id, results)
    (carrying the evidence templates and the name-list files it used, for the run's audit);
    the summary the DAG and the report read. `run_errors` fills while the stream runs, so
    the errors file is written when the last row is, and matches.parquet is published last."""
    out = settings.matches_path(as_of)
    errors_path = settings.policy_errors_path(as_of)

    def write_errors(_tally):
        # A policy that failed at run time is skipped and reported with the load errors.
        write_json_atomic(_errors_json(list(errors) + list(run_errors)), errors_path)

    tally = write_results(out, stream, engine.evidence_templates(active),
                          {NAME_LISTS_META: json.dumps(name_lists_used, ensure_ascii=False)}, write_errors)
    errors = list(errors) + list(run_errors)
    failed = {e.key for e in run_errors}
    ran = [p for p in active if p.id not in failed]
    return {
        "as_of": str(as_of),
        "matches": str(out),
        "rows": tally.rows,
        "enterprises": enterprises,
        "policies_loaded": len(loaded),
        "policies_in_force": len(active),
        "policy_files": policy_lib.manifest(loaded),
        "policy_errors": len(errors),
        "bad_policy_files": sorted({Path(e.file).name for e in errors if not e.warning}),
        "policy_errors_file": str(errors_path),
        "name_lists": name_list_rows,
        "policies": tally.summary(ran),
    }


def run(settings: Settings, as_of: dt.date) -> dict:
    """Evaluate every policy in force on `as_of`; write output/<as_of>/matches.parquet."""
    portrait = pq.read_table(settings.portrait_path(as_of))
    loaded, errors, active = _active(settings, as_of)
    list_files = name_list_files(settings, [p.id for p in active if p.kind == "name_list"])
    name_lists = read_name_lists(list_files)
    run_errors: list[policy_lib.PolicyError] = []
    stream = ((p.id, part) for p, part in engine.evaluate_stream(portrait, active, as_of, name_lists,
                                                                  errors=run_errors))
    return _finish(settings, as_of, stream, loaded, errors, active, run_errors,
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
    # Run first (its errors go into the footer), then written policy by policy.
    scratch = settings.shard_path(as_of, shard, shards).with_suffix(".parts")
    path = settings.shard_path(as_of, shard, shards)
    stream = engine.evaluate_stream(portrait, active, as_of, name_lists, errors=run_errors, apply_budgets=False)
    write_results(scratch, ((p.id, part) for p, part in stream), engine.evidence_templates(active), {})
    meta = {"as_of": str(as_of), "shard": shard, "shards": shards, "range": [lo, hi],
            "enterprises": portrait.num_rows,
            "policy_files": policy_lib.manifest(loaded), "run_errors": _errors_json(run_errors),
            "name_lists": {k: v.num_rows for k, v in name_lists.items()},
            "name_list_files": name_list_manifest(list_files)}
    parts = pq.ParquetFile(scratch)
    schema = parts.schema_arrow.with_metadata({**parts.schema_arrow.metadata,
                                               SHARD_META: json.dumps(meta, ensure_ascii=False).encode("utf-8")})
    files_lib.atomic_write_parquet_stream(path, schema, (parts.read_row_group(i) for i in range(parts.num_row_groups)),
                                          write_statistics=with_statistics(schema))
    scratch.unlink()
    return str(path)


def policy_row_groups(parts: pq.ParquetFile) -> dict[str, list[int]] | None:
    """policy id -> the row groups holding its results, from the row groups' statistics (the
    match stage and a shard write each policy as its own row groups); None when a row group
    holds more than one policy (a file written otherwise)."""
    meta = parts.metadata
    out: dict[str, list[int]] = {}
    if not meta.num_row_groups:
        return out
    first = meta.row_group(0)
    col = next(j for j in range(first.num_columns) if first.column(j).path_in_schema == "policy_id")
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(col).statistics
        if stats is None or not stats.has_min_max or stats.min != stats.max:
            return None
        out.setdefault(stats.min, []).append(i)
    return out


def merge(settings: Settings, as_of: dt.date, shards: int) -> dict:
    """The shards' results policy by policy, in `evaluate`'s order (policies in id order, each
    policy's rows in code order: each shard holds a code range above the previous shard's),
    with budgets applied per policy over all shards, written to output/<as_of>/matches.parquet;
    the same summary as `run`. One policy's results are in memory at a time."""
    _check_shard(0, shards)
    loaded, errors, active = _active(settings, as_of)
    manifest = policy_lib.manifest(loaded)
    files, run_errors = [], {}
    enterprises, list_rows, used = 0, {}, {}
    for k in range(shards):
        path = settings.shard_path(as_of, k, shards)
        parts = pq.ParquetFile(path)
        raw = (parts.schema_arrow.metadata or {}).get(SHARD_META)
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
        groups = policy_row_groups(parts)
        if groups is None:
            raise RuntimeError(f"{path}: a row group holds more than one policy's results")
        files.append((parts, groups))
    # Errors in policy order, as `evaluate` reports them; a policy that failed in any shard is
    # skipped in all of them.
    order = {p.id: i for i, p in enumerate(active)}
    failed = sorted(run_errors.values(), key=lambda e: order.get(e.key, len(order)))

    def stream():
        for policy in active:
            if policy.id in run_errors:
                continue
            pieces = [parts.read_row_groups(groups[policy.id]).replace_schema_metadata(None)
                      for parts, groups in files if policy.id in groups]
            if pieces:
                yield policy.id, engine.apply_budget(pa.concat_tables(pieces), policy)

    return _finish(settings, as_of, stream(), loaded, errors, active, failed, enterprises, list_rows,
                   [used[name] for name in sorted(used)])
