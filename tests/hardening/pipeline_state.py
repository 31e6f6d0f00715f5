"""A whole pipeline installation under one folder, its stages one by one, and
a comparable picture of everything it wrote (files and warehouse).

Used by the crash, concurrency and rerun tests: a reference run is built once
per test session (nightly stages of two dates, with the returned-file moves
between them), with a copy of the folder kept before every stage, so that a
test can start from "just before stage S" in a fraction of a second.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from tests.conftest import ROOT, make_settings

N1, N2 = date(2026, 11, 26), date(2026, 11, 27)
ENTERPRISES, SEED, DEFECTS = 150, 11, 0.005
FEEDS = ("registry", "tax", "social_insurance", "tech", "credit")


def run_id(as_of: date) -> str:
    """The run id Airflow's dag.test gives the run of as_of (so that a DAG-level
    test can be compared with the reference built from the stage functions)."""
    return f"manual__{as_of.isoformat()}T00:00:00+00:00"


def settings_for(base: Path, url: str | None = None):
    extra = {"MIANSHEN_WAREHOUSE_URL": url} if url else {}
    return make_settings(base, policies=ROOT / "data" / "policies", **extra)


# ---------------------------------------------------------------- the stages

@dataclass(frozen=True)
class Stage:
    name: str          # the DAG task id
    as_of: date
    call: Callable     # call(settings) -> anything


def _ingest(feed, as_of):
    def call(s):
        from pipelines import ingest
        return ingest.ingest_feed(s, feed, as_of)
    return call


def _validate(feed, as_of):
    def call(s):
        from pipelines import validate
        return validate.validate_feed(s, feed, as_of)
    return call


def _gate(as_of):
    def call(s):
        from pipelines import validate
        return validate.gate(s, as_of)
    return call


def _portrait(as_of):
    def call(s):
        from pipelines import portrait
        return portrait.build(s, as_of)
    return call


def _match(as_of):
    def call(s):
        from pipelines import match
        return match.run(s, as_of)
    return call


def _ledger(as_of):
    def call(s):
        from pipelines import handoff
        return handoff.ledger_and_outputs(s, as_of, run_id(as_of))
    return call


def _report(as_of):
    def call(s):
        # exactly what the run_report task does (the run got as far as the ledger)
        from pipelines import nightly, report
        nightly.record_audit(s, as_of, run_id(as_of), "success")
        return report.write(s, as_of, run_id(as_of))
    return call


def stages(as_of: date) -> list[Stage]:
    """The nightly DAG's tasks in one topological order (each ingest right before its validate)."""
    out: list[Stage] = []
    for feed in FEEDS:
        out.append(Stage(f"ingest_{feed}", as_of, _ingest(feed, as_of)))
        out.append(Stage(f"validate_{feed}", as_of, _validate(feed, as_of)))
    out += [Stage("quality_gate", as_of, _gate(as_of)), Stage("build_portrait", as_of, _portrait(as_of)),
            Stage("match_policies", as_of, _match(as_of)), Stage("ledger_and_outputs", as_of, _ledger(as_of)),
            Stage("run_report", as_of, _report(as_of))]
    return out


def run_stages(settings, todo: list[Stage]) -> None:
    for stage in todo:
        stage.call(settings)


# ---------------------------------------------------------------- between the nights

def returned_files_moves(settings, as_of: date) -> dict[str, list[tuple]]:
    """What the departments' returned files do between night 1 and night 2, applied
    straight to the ledger (the inbox path is tested elsewhere): confirmations,
    one decline, reviews (one 不通过), and one approved result whose publicity
    window is already over so that night 2 schedules a payout batch."""
    from pipelines import ledger, warehouse
    from pipelines.ledger import Source

    engine = warehouse.connect(settings.warehouse_url)
    with engine.begin() as conn:
        rows = ledger.rows_in(conn, "notified")
        assert len(rows) >= 8, f"too few eligible results to walk: {len(rows)}"
        keys = ledger.keys(rows)
        confirm, decline, approve, reject = keys[:6], keys[6], keys[:4], keys[4]
        src = Source(file="test-returns.xlsx", sha256="0" * 64)
        for k in confirm:
            assert ledger.transition(conn, k, "confirmed", src, None) is None
        assert ledger.transition(conn, decline, "declined", src, None) is None
        for k in approve:
            assert ledger.transition(conn, k, "approved", src, None) is None
        assert ledger.transition(conn, reject, "rejected", src, None, note="不通过") is None
        # the first approved result's publicity window lies before night 2: payable on night 2
        conn.execute(warehouse.ledger.update().where(
            warehouse.ledger.c.policy_id == approve[0][0], warehouse.ledger.c.period == approve[0][1],
            warehouse.ledger.c.uscc == approve[0][2]).values(
            publicity_days=1, publicity_from=as_of - timedelta(days=2), publicity_to=as_of - timedelta(days=1),
            over_budget=False))
    return {"confirmed": confirm[4:6], "approved": approve, "payable": [approve[0]]}


# ---------------------------------------------------------------- the picture

VOLATILE_JSON_KEYS = {"received_at"}
# Provenance that differs between a clean run and a rerun with the same outcome: a verdict
# notes that GX's results of an earlier attempt were reused (the cache, not the data).
PROVENANCE_JSON_KEYS = {"gx_reused"}
GENERATED_AT = re.compile(r"生成时间：\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


def _normalise_json(value, base: str):
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE_JSON_KEYS else _normalise_json(v, base)) for k, v in value.items()
                if k not in PROVENANCE_JSON_KEYS}
    if isinstance(value, list):
        return [_normalise_json(v, base) for v in value]
    return value


def _content(path: Path, base: str):
    data = path.read_bytes()
    if path.suffix == ".json":
        return _normalise_json(json.loads(data), base)
    if path.suffix == ".html":
        return GENERATED_AT.sub("生成时间：<now>", data.decode("utf-8"))
    return hashlib.sha256(data).hexdigest()   # byte for byte


def files(settings, roots=("output", "work")) -> dict[str, object]:
    """Every file under output/ and work/ (the warehouse file and GX Data Docs,
    which GX writes with its own run stamps, aside): relative path -> content,
    byte for byte except receipt times and the report's clock."""
    from pipelines.files import is_temporary

    base = Path(settings.work).parent
    out = {}
    for root in roots:
        folder = base / root
        if not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*")):
            rel = str(p.relative_to(base))
            # GX's own results (and the validation cache's copies of them) carry run times and ids
            if (not p.is_file() or "/data_docs/" in rel or "/gx_results/" in rel or "/validation_cache/" in rel
                    or p.name.startswith("warehouse.db") or is_temporary(p)):
                continue
            out[rel] = _content(p, str(base))
    return out


def temporaries(settings) -> list[str]:
    from pipelines.files import is_temporary

    base = Path(settings.work).parent
    return [str(p) for p in base.rglob("*") if p.is_file() and is_temporary(p)]


def warehouse_state(url: str) -> dict[str, object]:
    """The warehouse without surrogate ids and clock times: every ledger row by key,
    every transition in order per key, the registered results (files and counts), batches and
    their items, audit rows."""
    from pipelines import warehouse as wh

    engine = wh.connect(url)
    with engine.connect() as conn:
        led = {r.id: (r.policy_id, r.period, r.uscc) for r in conn.execute(sa.select(wh.ledger))}
        ledger_rows = {
            (r.policy_id, r.period, r.uscc): {k: v for k, v in r._mapping.items() if k not in ("id", "updated_at")}
            for r in conn.execute(sa.select(wh.ledger))}
        moves: dict[tuple, list] = {}
        for r in conn.execute(sa.select(wh.ledger_transitions).order_by(wh.ledger_transitions.c.id)):
            moves.setdefault(led[r.ledger_id], []).append(
                (r.from_status, r.to_status, r.run_id, r.source_file, r.source_sha256, r.department, r.amount, r.note))
        state = {
            "ledger": ledger_rows,
            "transitions": moves,
            "matches": sorted((r.as_of, r.path and Path(r.path).name, r.sha256, r.rows, r.run_id)
                              for r in conn.execute(sa.select(wh.match_files)))
            + sorted(tuple(r) for r in conn.execute(sa.select(wh.match_counts))),
            "batches": sorted((r.batch_id, r.as_of, r.run_id, r.status, r.items, r.total)
                              for r in conn.execute(sa.select(wh.payout_batches))),
            "items": sorted((r.batch_id, led[r.ledger_id], r.amount, r.department)
                            for r in conn.execute(sa.select(wh.payout_items))),
            "releases": sorted((r.policy_id, r.period, r.operator) for r in conn.execute(sa.select(wh.budget_releases))),
            "runs": sorted((r.run_id, r.as_of, r.status) for r in conn.execute(sa.select(wh.runs))),
            "run_inputs": sorted((r.run_id, r.kind, r.name, r.delivered_on, r.sha256, r.accepted)
                                 for r in conn.execute(sa.select(wh.run_inputs))),
            "portraits": sorted((r.as_of, r.sha256, r.rows, r.run_id) for r in conn.execute(sa.select(wh.portraits))),
        }
        conn.rollback()
    return state


def picture(settings) -> dict:
    return {"files": files(settings), "warehouse": warehouse_state(settings.warehouse_url)}


def diff(a: dict, b: dict, path: str = "") -> list[str]:
    """Readable differences between two pictures (empty when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}/{k}: only in second")
            elif k not in b:
                out.append(f"{path}/{k}: only in first")
            else:
                out += diff(a[k], b[k], f"{path}/{k}")
        return out
    return [] if a == b else [f"{path}: {str(a)[:200]} != {str(b)[:200]}"]


# ---------------------------------------------------------------- the reference installation

@dataclass
class Reference:
    """Every checkpoint is a copy of the one installation folder `live`; a test
    restores one into `live` itself (paths recorded in the files stay true), so
    the tests that use it run one after another in one process."""

    root: Path
    order: list[Stage]               # every stage of both nights, in order
    final: dict                      # picture after everything
    _pictures: dict = field(default_factory=dict)

    @property
    def live(self) -> Path:
        return self.root / "live"

    def before(self, index: int) -> Path:
        return self.root / f"before_{index:02d}"

    def index(self, name: str, as_of: date) -> int:
        return next(i for i, s in enumerate(self.order) if s.name == name and s.as_of == as_of)

    def checkout(self, index: int, url: str | None = None):
        """The installation as it was just before stage `index` (len(order): after all); its settings.
        Before night 2's first stage means before the returned files' moves too."""
        from pipelines import warehouse

        warehouse.dispose_all()
        if self.live.exists():
            shutil.rmtree(self.live)
        shutil.copytree(self.before(index), self.live)
        return settings_for(self.live, url)

    def finish(self, settings, start: int, stop: int | None = None) -> None:
        """Run stages start..stop-1 (the returned files' moves in between, as in the reference)."""
        for i in range(start, len(self.order) if stop is None else stop):
            if i == self.index("ingest_registry", N2):
                returned_files_moves(settings, N2)
            self.order[i].call(settings)

    def picture_before(self, index: int) -> dict:
        """The reference picture just before stage `index`, read from its checkpoint in place."""
        if index not in self._pictures:
            self._pictures[index] = picture(settings_for(self.before(index)))
        return self._pictures[index]


_BUILT: dict[str, Reference] = {}


def reference(root: Path) -> Reference:
    """Build once per session: landing data for both dates, then every stage of
    night 1, the returned files' moves, every stage of night 2, copying the
    installation before each stage (and once at the end)."""
    key = str(root)
    if key in _BUILT:
        return _BUILT[key]
    from pipelines import demo_data, warehouse

    ref = Reference(root=root, order=stages(N1) + stages(N2), final={})
    settings = settings_for(ref.live)
    demo_data.generate(settings.landing, N1, ENTERPRISES, SEED, DEFECTS)
    demo_data.generate(settings.landing, N2, ENTERPRISES, SEED, DEFECTS)
    for i, stage in enumerate(ref.order):
        warehouse.dispose_all()
        shutil.copytree(ref.live, ref.before(i))
        if i == ref.index("ingest_registry", N2):
            returned_files_moves(settings, N2)
        stage.call(settings)
    ref.final = picture(settings)
    warehouse.dispose_all()
    shutil.copytree(ref.live, ref.before(len(ref.order)))
    _BUILT[key] = ref
    return ref
