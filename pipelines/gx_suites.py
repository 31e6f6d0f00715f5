"""The Great Expectations adapter: suites, the frame GX sees, the context, the run and its Data Docs.

The rules live in the suites `expectations/<feed>.json` (GX suite JSON, each
expectation carrying `meta.reason_zh`, a template formatted with the failing
row's values and the run-time parameters). Rules that depend on dates (not in
the future, plausible for the delivery date) read suite parameters supplied at
run time (`suite_parameters`): `as_of`, `delivery_date`, `delivery_day_end`,
`delivery_year`, `delivery_month`, `delivery_month_start`.

GX Core runs directly (no Airflow provider) on one pandas frame built once
from the typed staged table (only the columns the suite reads, in dtypes GX
compares vectorised where that changes no outcome: see `gx_frame`), with
result_format COMPLETE: GX lists each failing row by the frame's index, which
is the staged row position, so every failure maps back to its row.
`pipelines.validate` turns those rows into verdicts; the custom expectation
for the USCC check character is in `pipelines.gx_uscc`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import Settings
from pipelines.files import atomic_write_bytes
from pipelines.ingest import HELPER_COLUMNS


def load_suite(settings: Settings, feed: str) -> dict:
    return json.loads(settings.suite_path(feed).read_text(encoding="utf-8"))


def suite_parameters(as_of: dt.date, delivery: dt.date) -> dict:
    return {
        "as_of": as_of.isoformat(),
        "delivery_date": delivery.isoformat(),
        "delivery_day_end": f"{delivery.isoformat()}T23:59:59",
        "delivery_year": delivery.year,
        "delivery_month": f"{delivery:%Y-%m}",
        "delivery_month_start": delivery.replace(day=1).isoformat(),
    }


def _gx():
    """Import GX once per process (≈7 s) and register the custom expectation."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    import great_expectations.util as gx_util

    import pipelines.gx_uscc  # noqa: F401  registers expect_column_values_to_be_valid_uscc

    # GX turns each Decimal in a stored result (the unexpected values shown in
    # Data Docs) into a float through a helper that walks inspect.stack() per
    # value: ~5 ms each, 20 s for a tax delivery with a few thousand bad rows.
    # Those floats only feed the Data Docs display; our verdicts and the
    # quarantine use the exact values. Same conversion, without the stack walk.
    gx_util.convert_decimal_to_float = _decimal_for_display
    return gx


def _decimal_for_display(d) -> float:
    return float(d)


def gx_context(quality_dir: Path):
    """An ephemeral context whose results store and Data Docs site live in the run's quality folder.

    The context itself costs milliseconds (the import is the expensive part and
    happens once per process); a fresh one per call means no suite or
    checkpoint state leaks between feeds or runs, while the file-backed
    results store lets the Data Docs index list every feed validated for this
    run, even when each feed is validated in its own Airflow task process.
    """
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "quality": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(quality_dir / "data_docs")},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    config.stores["validation_results_store"] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(quality_dir / "gx_results")},
    }
    return gx.get_context(project_config=config, mode="ephemeral")


def rule_columns(kwargs: dict) -> list[str]:
    """The columns one expectation reads, from its kwargs (none for a table-wide rule)."""
    return [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs] + list(kwargs.get("column_list", []))


def suite_columns(suite: dict, table: pa.Table) -> list[str]:
    """The staged columns the suite's rules read (all of them if a rule is table-wide), in table order."""
    named: set[str] = set()
    for e in suite["expectations"]:
        columns = rule_columns(e["kwargs"])
        if not columns:
            named = set(table.column_names)
            break
        named.update(columns)
    return [n for n in table.column_names if n in named and n not in HELPER_COLUMNS]


def _vectorisable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """`column` in a type GX compares vectorised, when that cannot change any rule's outcome."""
    if pa.types.is_timestamp(column.type) and column.type.tz is None and column.type.unit != "ns":
        # GX compares datetime64[ns] vectorised, other units one Timestamp at a time;
        # a value outside the nanosecond range (years 1678-2261) keeps the column as it is.
        try:
            return pc.cast(column, pa.timestamp("ns"), safe=True)
        except pa.ArrowInvalid:
            return column
    return _as_float(column) or column


def _as_float(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """The numbers as float64 when that cannot change any rule's outcome, else None.

    GX compares numpy int64/float64 columns vectorised and every other dtype
    (nullable Int64, Decimal objects) one Python value at a time. float64 keeps
    each rule's answer when the conversion is exact for integers (|n| <= 2**53)
    and, for decimals, correctly rounded (via the decimal text) with fewer than
    2**52 units of the last place, so distinct values stay distinct and in
    order and the sign never changes; larger values keep their exact dtype.
    """
    if pa.types.is_integer(column.type):
        try:
            return pc.cast(column, pa.float64(), safe=True)
        except pa.ArrowInvalid:
            return None
    if pa.types.is_decimal(column.type):
        largest = pc.max(pc.abs(column)).as_py()
        if largest is not None and largest >= Decimal(2**52).scaleb(-column.type.scale):
            return None
        return pc.cast(pc.cast(column, pa.string()), pa.float64())
    return None


def gx_frame(table: pa.Table, columns: list[str] | None = None):
    """The one pandas frame GX sees: the columns the suite reads, typed, periods as the first day of their month.

    Its default RangeIndex is the staged row position: GX reports failing rows by it.
    Integer, decimal and timestamp columns become float64 / datetime64[ns] where
    that decides every rule the same way (`_vectorisable`), so GX compares them
    vectorised rather than one Python object at a time. Dates become midnight
    datetime64[ns] too, all of them or (a date outside years 1678-2261) none, so
    that two date columns always compare; returns (frame, dates_as_datetimes) and
    the caller gives GX its date parameters as midnight datetimes accordingly.
    """
    import pandas as pd

    cols = {}
    for name in columns if columns is not None else table.column_names:
        if name in HELPER_COLUMNS:
            continue
        column = table[name]
        if name == "period":
            column = pc.strptime(pc.binary_join_element_wise(column, "-01", ""), format="%Y-%m-%d", unit="s").cast(pa.date32())
        cols[name] = _vectorisable(column)
    dates = [n for n, c in cols.items() if pa.types.is_date(c.type)]
    try:
        cols.update({n: pc.cast(cols[n], pa.timestamp("ns"), safe=True) for n in dates})
        dates_as_datetimes = True
    except pa.ArrowInvalid:
        dates_as_datetimes = not dates
    if not cols:
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows)), dates_as_datetimes
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return pa.table(cols).to_pandas(types_mapper=mapping.get), dates_as_datetimes


def gx_parameters(params: dict, dates_as_datetimes: bool) -> dict:
    """The suite parameters as GX gets them: an ISO date as its midnight when the frame's dates are datetimes.

    (GX reads "2026-11-26" as a date and "2026-11-26T00:00:00" as a datetime; each compares only with its own kind.)
    """
    if not dates_as_datetimes:
        return params
    return {k: f"{v}T00:00:00" if isinstance(v, str) and _is_iso_date(v) else v for k, v in params.items()}


def _is_iso_date(text: str) -> bool:
    try:
        return len(text) == 10 and dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def suite_parameter_names(suite: dict) -> set[str]:
    """The run-time parameters the suite's rules read (`{"$PARAMETER": name}` anywhere in an
    expectation's kwargs): the only parameters a GX run's outcome depends on."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$PARAMETER"), str):
                names.add(node["$PARAMETER"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for e in suite["expectations"]:
        walk(e.get("kwargs", {}))
    return names


def results_dir(qdir: Path, feed: str) -> Path:
    """The feed's folder in the run's GX results store."""
    return qdir / "gx_results" / feed


def stored_result(qdir: Path, feed: str) -> Path | None:
    """The file the results store holds for the feed's last GX run in `qdir` (run_suite keeps one)."""
    found = sorted(results_dir(qdir, feed).rglob("*.json"))
    return found[0] if len(found) == 1 else None


def _clear_feed(qdir: Path, feed: str) -> None:
    # A rerun replaces this feed's earlier result for the same run date.
    shutil.rmtree(results_dir(qdir, feed), ignore_errors=True)
    shutil.rmtree(qdir / "data_docs" / "validations" / feed, ignore_errors=True)


def _context_with_suite(qdir: Path, feed: str, suite: dict):
    gx = _gx()
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    ctx = gx_context(qdir)
    expectations = [
        ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta=e.get("meta", {})).to_domain_obj()
        for e in suite["expectations"]
    ]
    gx_suite = ctx.suites.add(gx.ExpectationSuite(name=feed, expectations=expectations, meta=suite.get("meta", {})))
    return gx, ctx, gx_suite


def rebuild_data_docs(qdir: Path, feed: str, suite: dict, relative: Path, result: bytes) -> None:
    """Put a stored GX validation result back into the run's results store and build its Data Docs.

    Does what the checkpoint's UpdateDataDocsAction does after a run (the result's
    page, the suite's page, the index), for a result GX computed earlier for the
    same delivery and suite; no rule is evaluated again."""
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    _clear_feed(qdir, feed)
    target = qdir / "gx_results" / relative
    if target.parent.parent.parent != results_dir(qdir, feed) or target.suffix != ".json":
        raise ValueError(f"not a stored result of {feed}: {relative}")
    atomic_write_bytes(target, result)
    _gx_, ctx, _suite = _context_with_suite(qdir, feed, suite)
    key = ValidationResultIdentifier.from_tuple((feed, *relative.with_suffix("").parts[1:]))
    ctx.build_data_docs(resource_identifiers=[key, ExpectationSuiteIdentifier(name=feed)], build_index=True)


def rebuild_index(qdir: Path) -> None:
    """Build the Data Docs index alone, from the pages on disk: feeds validated at the same time
    in separate processes each rebuild it, and the last one may have listed the folder before
    another's page was there. (An identifier that matches nothing: no page is rendered.)"""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    gx_context(qdir).build_data_docs(resource_identifiers=[ExpectationSuiteIdentifier(name="\x00index")],
                                     build_index=True)


def run_suite(qdir: Path, feed: str, suite: dict, table: pa.Table, params: dict) -> list[dict]:
    """Validate `table` against `suite`; per expectation: config, success and the failing staged row positions.

    Also stores the result and rebuilds the Data Docs in the run's quality folder `qdir`.
    """
    _clear_feed(qdir, feed)
    gx, ctx, gx_suite = _context_with_suite(qdir, feed, suite)
    batch_def = ctx.data_sources.add_pandas("staged").add_dataframe_asset(feed).add_batch_definition_whole_dataframe("delivery")
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=feed, data=batch_def, suite=gx_suite))
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=feed,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            # every failing row's index (the staged row position); no pandas query text
            result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
        )
    )
    frame, dates_as_datetimes = gx_frame(table, suite_columns(suite, table))
    run = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=gx_parameters(params, dates_as_datetimes))
    del frame
    (result,) = run.run_results.values()
    out = []
    for er in result.results:
        info = er.exception_info or {}
        if info.get("raised_exception"):
            # A rule that could not be evaluated must not pass silently.
            raise RuntimeError(f"GX expectation {er.expectation_config.type} failed: {info.get('exception_message')}")
        indices = er.result.get("unexpected_index_list") or []
        out.append(
            {
                "type": er.expectation_config.type,
                "kwargs": dict(er.expectation_config.kwargs),
                "meta": dict(er.expectation_config.meta or {}),
                "success": bool(er.success),
                "unexpected": [int(i) for i in indices],
            }
        )
    return out

