"""Validate a delivery with GX once: the rule results of a delivery already validated under the same suite are reused.

A feed's delivery stays the newest for days or weeks (the tax feed for a year),
and a run may be repeated for the same date, so the nights run GX over the same
rows again and again. GX's outcome depends only on what the key below holds;
when a run finds an entry under the same key, it takes the stored rule results
(the failing staged row positions per expectation) instead of running GX, puts
the stored GX validation result back into the run's results store and rebuilds
the Data Docs from it. Everything else in the verdict (timeliness, drift, the
bad-row share, the registry check, accept_drift) depends on the run date and on
other deliveries, and `pipelines.validate` decides it afresh every time from
these results, so verdict, quarantine list, validated rows and gate come out as
a fresh GX run would make them.

The key (any doubt means validate again):
- the delivery's files and their sha256 as ingest recorded them;
- the sha256 of the staged Parquet file GX's frame is built from (what ingest
  made of those bytes), read once here and handed to validation;
- the sha256 of the suite file (expectations/<feed>.json);
- the values of the run-time parameters the suite's rules read (`as_of` for the
  registry's not-in-the-future rule, the delivery date's derivatives for others);
- the source of the modules that build GX's frame and the custom expectation,
  and the versions of GX, pandas, pyarrow and numpy.
An entry is used only if its stored key equals the one computed now, its
results are well-formed and point at rows that exist; otherwise GX runs.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from importlib import metadata
from pathlib import Path

from pipelines import gx_suites
from pipelines.config import Settings
from pipelines.files import atomic_write_bytes, atomic_write_text

FORMAT = 1
# The modules whose code decides the frame GX sees or a rule's outcome.
CODE = ("gx_suites.py", "gx_uscc.py", "uscc.py", "contracts.py", "ingest.py")
LIBRARIES = ("great_expectations", "pandas", "pyarrow", "numpy")
RESULT_KEYS = {"type", "kwargs", "meta", "success", "unexpected"}


@dataclass(frozen=True)
class Suite:
    """A suite as read from its file: the parsed suite and the sha256 of its bytes."""
    suite: dict
    sha256: str


def read_suite(settings: Settings, feed: str) -> Suite:
    data = settings.suite_path(feed).read_bytes()
    return Suite(json.loads(data.decode("utf-8")), hashlib.sha256(data).hexdigest())


def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in CODE:
        digest.update(name.encode() + b"\0" + (Path(__file__).parent / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in LIBRARIES}


def cache_key(feed: str, ingested: dict, staged_sha256: str, suite: Suite, params: dict) -> dict:
    """Everything a GX run's outcome depends on (see the module docstring)."""
    used = sorted(gx_suites.suite_parameter_names(suite.suite))
    return {
        "format": FORMAT,
        "feed": feed,
        "delivery_date": ingested.get("delivery_date"),
        "files": sorted([f["name"], f["sha256"]] for f in ingested.get("files") or []),
        "staged_sha256": staged_sha256,
        "suite_sha256": suite.sha256,
        # a parameter the suite reads but the run does not supply: GX would fail; no reuse
        "parameters": {name: params.get(name) for name in used},
        "code": _code_fingerprint(),
        "libraries": _versions(),
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _well_formed(results, rows: int) -> bool:
    if not isinstance(results, list) or not results:
        return False
    for res in results:
        if not isinstance(res, dict) or set(res) != RESULT_KEYS:
            return False
        unexpected = res["unexpected"]
        if not isinstance(unexpected, list) or not all(type(i) is int and 0 <= i < rows for i in unexpected):
            return False
        if not isinstance(res["kwargs"], dict) or not isinstance(res["meta"], dict):
            return False
    return True


# The resolved kwargs GX hands back may hold parameter values as datetimes (and a suite
# may hold decimals): stored tagged, so a reused result equals the fresh one exactly.
_TAGS = {"$datetime": dt.datetime.fromisoformat, "$date": dt.date.fromisoformat, "$decimal": Decimal}


def _encode(value):
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    raise TypeError(f"cannot keep {type(value).__name__} in the validation cache")


def _decode(obj: dict):
    if len(obj) == 1:
        ((tag, text),) = obj.items()
        if tag in _TAGS and isinstance(text, str):
            return _TAGS[tag](text)
    return obj


def _read_entry(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"), object_hook=_decode)
    except (OSError, ValueError, TypeError, ArithmeticError):
        return None
    return entry if isinstance(entry, dict) else None


def lookup(settings: Settings, key: dict, suite: Suite, rows: int) -> dict | None:
    """The stored entry for `key`, if it is complete and sound; None means run GX.

    `rows`: the staged delivery's row count (every failing position must be one of its rows)."""
    feed, digest = key["feed"], key_digest(key)
    entry = _read_entry(settings.validation_cache_path(feed, digest))
    result_file = settings.validation_cache_result_path(feed, digest)
    if not isinstance(entry, dict) or entry.get("key") != key or not result_file.is_file():
        return None
    results = entry.get("results")
    if not _well_formed(results, rows):
        return None
    if sorted(r["type"] for r in results) != sorted(e["type"] for e in suite.suite["expectations"]):
        return None
    relative = Path(str(entry.get("result_path") or ""))
    if relative.is_absolute() or ".." in relative.parts or len(relative.parts) != 4 or relative.parts[0] != feed:
        return None
    if not isinstance(entry.get("validated_as_of"), str) or not isinstance(entry.get("validated_at"), str):
        return None
    return entry


def store(settings: Settings, key: dict, results: list[dict], qdir: Path, as_of: dt.date) -> None:
    """Keep the GX run just made for `key`: its rule results and its stored validation result."""
    feed, digest = key["feed"], key_digest(key)
    produced = gx_suites.stored_result(qdir, feed)
    if produced is None:
        return  # nothing to rebuild the Data Docs from: no entry, the next run validates again
    entry = {
        "key": key,
        "validated_as_of": as_of.isoformat(),
        "validated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "result_path": produced.relative_to(qdir / "gx_results").as_posix(),
        "results": results,
    }
    try:
        text = json.dumps(entry, ensure_ascii=False, default=_encode)
    except (TypeError, ValueError):
        return  # a value the cache cannot keep exactly: no entry, the next run validates again
    # the GX result first: an entry on disk always has its result beside it
    atomic_write_bytes(settings.validation_cache_result_path(feed, digest), produced.read_bytes())
    atomic_write_text(settings.validation_cache_path(feed, digest), text)
    prune(settings, feed)


KEEP_PER_FEED = 3


def prune(settings: Settings, feed: str, keep: int = KEEP_PER_FEED) -> list[Path]:
    """Keep the `keep` entries of a feed used last (a reuse touches its entry): a feed's
    registry is validated again every night, and each night would otherwise leave an entry
    of the size of its GX result. Returns what was removed."""
    folder = settings.validation_cache_dir(feed)
    entries = sorted((p for p in folder.glob("*.json") if not p.name.endswith(".gx.json")),
                     key=lambda p: p.stat().st_mtime_ns, reverse=True) if folder.is_dir() else []
    removed = []
    for entry in entries[keep:]:
        for path in (entry, entry.with_name(entry.name.removesuffix(".json") + ".gx.json")):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def reuse(settings: Settings, entry: dict, qdir: Path, suite: Suite) -> list[dict]:
    """Put the entry's GX result into this run's results store and Data Docs; its rule results."""
    feed = entry["key"]["feed"]
    digest = key_digest(entry["key"])
    result = settings.validation_cache_result_path(feed, digest).read_bytes()
    settings.validation_cache_path(feed, digest).touch()   # used last: kept by `prune`
    gx_suites.rebuild_data_docs(qdir, feed, suite.suite, Path(entry["result_path"]), result)
    return entry["results"]


def reuse_note(entry: dict) -> dict:
    """What the verdict says about a reused GX run (operators read the Chinese note)."""
    return {
        "validated_as_of": entry["validated_as_of"],
        "validated_at": entry["validated_at"],
        "note": (
            f"本交付的文件内容与校验规则自 {entry['validated_as_of']} 运行校验以来均未变化，"
            "沿用当次 Great Expectations 规则校验结果（数据文档中的校验时间为当次时间）；"
            "时效、行数变化、不合格行比例和企业登记核对已按本次运行重新判断。"
        ),
    }
