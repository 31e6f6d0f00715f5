"""The warehouse: tables, engines and migrations (SQLite by default, PostgreSQL too).

The schema is created and evolved only by the Alembic migrations in
pipelines/migrations/ (run programmatically by `migrate`), never by
`metadata.create_all`; the Core tables below are what the code queries and are
compared against the migrated schema in the tests.

Money is `Money`: NUMERIC(20,2) on PostgreSQL and canonical decimal text on
SQLite, because SQLite would otherwise keep NUMERIC as a binary float.
Timestamps are naive UTC.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipelines.files import sha256_file

CENT = Decimal("0.01")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# The ledger's statuses and the only transitions allowed (lifecycle.md).
# The database holds the same pairs in `allowed_transitions`, seeded by the
# migrations (0001, then 0003 for 再确认 and 追回, 0004 for 逾期未确认), and a trigger refuses any
# other status change. The migrations keep their own frozen copies of these lists.
STATUSES = ("eligible", "notified", "confirmed", "declined", "approved", "rejected",
            "objected", "scheduled", "paid", "suspended", "recovering", "recovered", "expired")
TRANSITIONS = (
    ("eligible", "notified"),
    ("notified", "confirmed"),
    ("notified", "declined"),
    ("confirmed", "approved"),
    ("confirmed", "rejected"),
    ("approved", "scheduled"),
    ("approved", "objected"),
    ("objected", "approved"),
    ("objected", "rejected"),
    ("scheduled", "paid"),
    ("approved", "suspended"),
    ("suspended", "approved"),
    ("suspended", "rejected"),
    ("paid", "recovering"),
    ("recovering", "recovered"),
    ("notified", "expired"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_money(value: object) -> Decimal | None:
    """Exact amount to the fen; refuses floats so that binary money never sneaks in."""
    if value is None:
        return None
    if isinstance(value, float):
        raise TypeError("money must not be a float")
    return Decimal(str(value)).quantize(CENT)


class Money(sa.types.TypeDecorator):
    """NUMERIC(20,2) where the database keeps decimals exact, text on SQLite."""

    impl = sa.Numeric(20, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.Numeric(20, 2, asdecimal=True))

    def process_bind_param(self, value, dialect):
        money = to_money(value)
        if money is None:
            return None
        return str(money) if dialect.name == "sqlite" else money

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(str(value)).quantize(CENT)


metadata = sa.MetaData()

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("as_of", sa.Date, nullable=False, index=True),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False),   # running | success | failed
    sa.Column("note", sa.Text),
)

# What a run read: one row per feed delivery and per policy file, with hashes.
run_inputs = sa.Table(
    "run_inputs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),     # feed | policy | name_list
    sa.Column("name", sa.String(200), nullable=False),    # feed file, policy file or <policy>/<list file>
    sa.Column("delivered_on", sa.Date),                   # feeds: delivery date
    sa.Column("path", sa.Text),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("accepted", sa.Boolean),
    sa.UniqueConstraint("run_id", "kind", "name", name="uq_run_inputs"),
)

# The portrait itself stays in Parquet (it can be large and is rebuilt per
# as_of); the warehouse records where it is and its hash so explain can find
# and verify it.
portraits = sa.Table(
    "portraits", metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(64)),
)

matches = sa.Table(
    "matches", metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("policy_id", sa.String(100), primary_key=True),
    sa.Column("period", sa.String(32), primary_key=True),
    sa.Column("uscc", sa.String(18), primary_key=True),
    sa.Column("policy_name", sa.Text, nullable=False),
    sa.Column("department", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("outcome", sa.String(24), nullable=False),
    sa.Column("amount", Money),
    sa.Column("failed_item", sa.BigInteger),
    sa.Column("failed_guard", sa.Text),
    sa.Column("excluded_by", sa.Text),
    sa.Column("exclusive_group", sa.Text),
    sa.Column("over_budget", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("evidence", sa.Text),
    sa.Column("run_id", sa.String(64)),
)

# The lean result model (0005): a night's results stay in its matches.parquet, registered
# here by path, hash and counts. `matches` holds the nights stored row by row before 0005
# (their rows keep their evidence) and is not written any more.
match_files = sa.Table(
    "match_files", metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("path", sa.Text),                 # null: a night stored before 0005, rows in `matches`
    sa.Column("sha256", sa.String(64)),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("registered_at", sa.DateTime),
)

match_counts = sa.Table(
    "match_counts", metadata,
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("policy_id", sa.String(100), primary_key=True),
    sa.Column("period", sa.String(32), primary_key=True),
    sa.Column("outcome", sa.String(24), primary_key=True),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("amount", Money),
)

# Each policy version's evidence template, stored once (evidence.render puts a result together).
evidence_versions = sa.Table(
    "evidence_versions", metadata,
    sa.Column("version", sa.String(16), primary_key=True),
    sa.Column("policy_id", sa.String(100), nullable=False),
    sa.Column("template", sa.Text, nullable=False),
    sa.Column("first_as_of", sa.Date),
)

ledger = sa.Table(
    "ledger", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy_id", sa.String(100), nullable=False),
    sa.Column("period", sa.String(32), nullable=False),
    sa.Column("uscc", sa.String(18), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount", Money),
    sa.Column("last_match_amount", Money),   # newest run's amount (differs once past eligible)
    sa.Column("evidence", sa.Text),            # full evidence JSON: rows stored before 0005
    sa.Column("policy_name", sa.Text, nullable=False),
    sa.Column("department", sa.Text, nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("over_budget", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("publicity_days", sa.Integer),
    sa.Column("publicity_from", sa.Date),
    sa.Column("publicity_to", sa.Date),
    sa.Column("notified_as_of", sa.Date),
    # 信用承诺 and the payee account, from the enterprise's confirmation (0003).
    sa.Column("commitment", sa.String(16)),
    sa.Column("payee_name", sa.Text),
    sa.Column("bank_name", sa.Text),
    sa.Column("bank_account", sa.String(32)),
    # 再确认: the finding that suspended the row, and the finding a department overrode.
    sa.Column("recheck_reason", sa.Text),
    sa.Column("recheck_override", sa.Text),
    sa.Column("paid_on", sa.Date),
    # 0004: the 催办 night, and the date of a manual policy's online application (such a row
    # enters at `confirmed`; the database lets no other row start past `eligible`).
    sa.Column("reminded_as_of", sa.Date),
    sa.Column("applied_on", sa.Date),
    # 0005: the evidence as values of its policy version (evidence_versions): the actual
    # values and the leaf and guard results, each a JSON array.
    sa.Column("evidence_version", sa.String(16)),
    sa.Column("evidence_actual", sa.Text),
    sa.Column("evidence_result", sa.Text),
    sa.Column("first_run", sa.String(64), nullable=False),
    sa.Column("last_run", sa.String(64), nullable=False),
    sa.Column("first_as_of", sa.Date, nullable=False),
    sa.Column("last_as_of", sa.Date, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("policy_id", "period", "uscc", name="uq_ledger_key"),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")", name="ck_ledger_status"
    ),
)

allowed_transitions = sa.Table(
    "allowed_transitions", metadata,
    sa.Column("from_status", sa.String(16), primary_key=True),
    sa.Column("to_status", sa.String(16), primary_key=True),
)

ledger_transitions = sa.Table(
    "ledger_transitions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ledger_id", sa.Integer, sa.ForeignKey("ledger.id"), nullable=False, index=True),
    sa.Column("from_status", sa.String(16)),        # NULL: the row was created
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("source_file", sa.Text),
    sa.Column("source_sha256", sa.String(64)),
    sa.Column("department", sa.Text),
    sa.Column("amount", Money),
    sa.Column("note", sa.Text),
    sa.Column("as_of", sa.Date),                    # business date of the move (0004)
)

# An operator's release of an over-budget hold, per policy and period.
budget_releases = sa.Table(
    "budget_releases", metadata,
    sa.Column("policy_id", sa.String(100), primary_key=True),
    sa.Column("period", sa.String(32), primary_key=True),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("released_at", sa.DateTime, nullable=False),
    sa.Column("note", sa.Text),
)

payout_batches = sa.Table(
    "payout_batches", metadata,
    sa.Column("batch_id", sa.String(32), primary_key=True),
    sa.Column("as_of", sa.Date, nullable=False, index=True),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # scheduled | paid (all items paid)
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("total", Money, nullable=False),
)

payout_items = sa.Table(
    "payout_items", metadata,
    sa.Column("batch_id", sa.String(32), sa.ForeignKey("payout_batches.batch_id"), nullable=False,
              index=True),
    sa.Column("ledger_id", sa.Integer, sa.ForeignKey("ledger.id"), primary_key=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("department", sa.Text, nullable=False),
)

# 追回: the department's request (paid -> recovering) and the finance bureau's receipt
# (recovering -> recovered), one per ledger row.
recoveries = sa.Table(
    "recoveries", metadata,
    sa.Column("ledger_id", sa.Integer, sa.ForeignKey("ledger.id"), primary_key=True),
    sa.Column("amount", Money, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("requested_at", sa.DateTime, nullable=False),
    sa.Column("request_file", sa.Text),
    sa.Column("received_amount", Money),
    sa.Column("received_on", sa.Date),
    sa.Column("receipt_file", sa.Text),
)

# ---------------------------------------------------------------- engines

def _sqlite_begin_immediate(engine: Engine) -> None:
    # pysqlite's own transaction handling starts transactions lazily and in
    # DEFERRED mode, so two writers can deadlock on the read->write lock
    # upgrade. Take the write lock at BEGIN instead; the busy timeout then
    # queues concurrent writers.
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        # (a reader's transaction, `reader`, takes no write lock: it goes on beside a writer)
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("mianshen_reader") else "BEGIN IMMEDIATE")


_ENGINES: dict[str, Engine] = {}
_MIGRATED: set[str] = set()
_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL and process (SQLite: immediate transactions, foreign keys on)."""
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                db = sa.engine.make_url(url).database
                if db and db != ":memory:":
                    Path(db).parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(url, connect_args={"timeout": 60})
                _sqlite_begin_immediate(engine)
            else:
                engine = sa.create_engine(url, pool_pre_ping=True)
            _ENGINES[url] = engine
        return engine


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the warehouse at `url` to `revision` with Alembic, no alembic.ini needed."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = engine_for(url)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite changes a constraint by rebuilding the table (copy, drop, rename) while
            # other tables reference it: its documented procedure turns foreign keys off
            # (possible only outside a transaction) and checks them before committing.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("migration left a dangling foreign key; rolled back")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
    _MIGRATED.add(url)


def connect(url: str) -> Engine:
    """The engine for `url`, migrated to head once per process."""
    if url not in _MIGRATED:
        migrate(url)
    return engine_for(url)


def dispose_all() -> None:
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()
        _MIGRATED.clear()


# The nightly ledger step (sync, notify, publicity, payout batch, the lists) moves
# the whole ledger, whatever its date: one step at a time per warehouse.
# The PostgreSQL advisory lock: (this class, the warehouse's schema). Keyed by schema, so that
# warehouses in schemas of one database (test runs, the benchmark) do not wait for each other.
LEDGER_STEP_LOCK = 0x6D69616E  # "mian"


@contextlib.contextmanager
def ledger_step_lock(engine: Engine):
    """Hold the warehouse's ledger-step lock for the block; waits for a holder.

    PostgreSQL: a session-level advisory lock on a connection of its own (any
    host, released by the server if the worker dies), one per schema. SQLite: an exclusive
    flock on `<database>.ledger.lock` beside the file (one host, released by the
    kernel if the process dies); an in-memory database needs none."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k, hashtext(current_schema()))"), {"k": LEDGER_STEP_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))"),
                             {"k": LEDGER_STEP_LOCK})
                conn.commit()
        return
    db = engine.url.database if engine.dialect.name == "sqlite" else None
    if not db or db == ":memory:":
        with _LOCK_STEP:
            yield
        return
    import fcntl

    fd = os.open(f"{db}.ledger.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)   # per open file: threads of one process wait too
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_LOCK_STEP = threading.RLock()


# ---------------------------------------------------------------- run audit

def record_run(conn: Connection, run_id: str, as_of: date, status: str,
               started_at: datetime | None = None, finished_at: datetime | None = None,
               note: str | None = None) -> None:
    """Insert or update the run's audit row (status: running | success | failed)."""
    row = conn.execute(sa.select(runs.c.run_id).where(runs.c.run_id == run_id)).first()
    if row is None:
        conn.execute(runs.insert().values(run_id=run_id, as_of=as_of, status=status,
                                          started_at=started_at or utcnow(),
                                          finished_at=finished_at, note=note))
    else:
        values = {"status": status}
        if finished_at is not None:
            values["finished_at"] = finished_at
        if note is not None:
            values["note"] = note
        conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))


def record_inputs(conn: Connection, run_id: str, feeds: Iterable[dict] = (),
                  policy_files: Iterable[Path] = (), name_lists: Iterable[dict] = ()) -> int:
    """Record what the run read. feeds: dicts with name, delivered_on, sha256 (, path, accepted);
    policy_files: paths, hashed here; name_lists: dicts with name, path, sha256 (the accepted
    lists that joined the results). A repeated call for the same run replaces its rows."""
    rows = [
        {"run_id": run_id, "kind": "feed", "name": f["name"], "delivered_on": f.get("delivered_on"),
         "path": str(f["path"]) if f.get("path") else None, "sha256": f["sha256"],
         "accepted": f.get("accepted")}
        for f in feeds
    ] + [
        {"run_id": run_id, "kind": "policy", "name": Path(p).name, "delivered_on": None,
         "path": str(p), "sha256": sha256_file(Path(p)), "accepted": None}
        for p in policy_files
    ] + [
        {"run_id": run_id, "kind": "name_list", "name": n["name"], "delivered_on": None,
         "path": n.get("path"), "sha256": n["sha256"], "accepted": True}
        for n in name_lists
    ]
    conn.execute(run_inputs.delete().where(run_inputs.c.run_id == run_id))
    if rows:
        conn.execute(run_inputs.insert(), rows)
    return len(rows)


def record_portrait(conn: Connection, as_of: date, path: Path, rows: int,
                    run_id: str | None = None) -> None:
    conn.execute(portraits.delete().where(portraits.c.as_of == as_of))
    conn.execute(portraits.insert().values(as_of=as_of, path=str(path), sha256=sha256_file(path),
                                           rows=rows, run_id=run_id))


# ---------------------------------------------------------------- matches

def register_matches(conn: Connection, as_of: date, path: Path, run_id: str | None) -> int:
    """Register the night's matches.parquet (inside the caller's transaction): its path,
    sha256 and rows, the rows and amount per policy, period and outcome (read from the
    file itself, not from the stage's summary), and the evidence templates it carries.
    Replaces what was registered for the date. Returns the file's row count."""
    import pyarrow.parquet as pq

    from pipelines.evidence import templates_of

    counts, owners = _counts(path)
    rows = sum(r["rows"] for r in counts)
    conn.execute(match_files.delete().where(match_files.c.as_of == as_of))
    conn.execute(match_counts.delete().where(match_counts.c.as_of == as_of))
    conn.execute(match_files.insert().values(as_of=as_of, path=str(path), sha256=sha256_file(path), rows=rows,
                                             run_id=run_id, registered_at=datetime.now(timezone.utc)
                                             .replace(tzinfo=None)))
    if counts:
        conn.execute(match_counts.insert(), [{"as_of": as_of, **r} for r in counts])
    used = templates_of(pq.read_schema(path))
    store_templates(conn, as_of, {v: used[v] for v in owners if v in used}, owners)
    return rows


def _counts(path: Path) -> tuple[list[dict], dict[str, str]]:
    """Rows and amount per policy, period and outcome of a matches.parquet, and the policy of
    each evidence version in it (DuckDB: it reads only those columns, in parallel; amounts
    stay exact decimals)."""
    import duckdb

    con = duckdb.connect()
    try:
        result = con.execute(
            "SELECT policy_id, period, outcome, evidence_version, count(*), sum(amount) "
            "FROM read_parquet(?) GROUP BY ALL ORDER BY ALL", [str(path)]).fetchall()
    finally:
        con.close()
    counts: dict[tuple, dict] = {}
    owners: dict[str, str] = {}
    for policy_id, period, outcome, version, n, amount in result:
        owners[version] = policy_id
        row = counts.setdefault((policy_id, period, outcome), {"policy_id": policy_id, "period": period,
                                                               "outcome": outcome, "rows": 0, "amount": None})
        row["rows"] += n
        if amount is not None:
            row["amount"] = amount if row["amount"] is None else row["amount"] + amount
    return list(counts.values()), owners


def store_templates(conn: Connection, as_of: date, templates: dict[str, list[dict]],
                    owners: dict[str, str]) -> int:
    """Store the evidence templates not stored yet (a version never changes: its key is its hash)."""
    if not templates:
        return 0
    known = {v for (v,) in conn.execute(sa.select(evidence_versions.c.version)
                                         .where(evidence_versions.c.version.in_(list(templates))))}
    new = [{"version": v, "policy_id": owners[v], "template": json.dumps(t, ensure_ascii=False), "first_as_of": as_of}
           for v, t in templates.items() if v not in known]
    if new:
        conn.execute(evidence_versions.insert(), new)
    return len(new)


def templates(conn: Connection, versions) -> dict[str, list[dict]]:
    """version -> template, for the given versions."""
    versions = sorted({v for v in versions if v})
    out = {}
    for lo in range(0, len(versions), 500):
        for v, t in conn.execute(sa.select(evidence_versions.c.version, evidence_versions.c.template)
                                 .where(evidence_versions.c.version.in_(versions[lo:lo + 500]))):
            out[v] = json.loads(t)
    return out


def newest_night(conn: Connection, other_than: date | None = None) -> date | None:
    """The newest date whose results are registered (optionally: other than `other_than`)."""
    query = sa.select(sa.func.max(match_files.c.as_of))
    if other_than is not None:
        query = query.where(match_files.c.as_of != other_than)
    return conn.execute(query).scalar()


def analyze(conn: Connection, *tables: sa.Table) -> None:
    """Gather PostgreSQL's statistics of `tables` now. A bulk load leaves them stale until
    autovacuum comes round (a temporary table never gets them), and the planner then takes a
    table of a million rows for a few hundred: the ledger step's sync and 督导统计 ran three
    times slower at 1M enterprises on nested loops it chose for that. SQLite: nothing."""
    if conn.dialect.name == "postgresql":
        for table in tables:
            conn.exec_driver_sql(f'ANALYZE "{table.name}"')


@contextlib.contextmanager
def reader(engine: Engine):
    """A connection that only reads the warehouse (its temporary tables aside), in a
    transaction rolled back at the end. On SQLite it does not take the write lock every other
    transaction takes at its start, so it reads beside the stage's own connection (which
    must not commit meanwhile: a commit waits for the readers to finish)."""
    with engine.connect() as conn:
        conn.execution_options(mianshen_reader=True)
        try:
            yield conn
        finally:
            conn.rollback()


def drop_temporary(conn: Connection, *tables: sa.Table, views: Iterable[str] = ()) -> None:
    """Be done with temporary tables (and the temporary views over them) of the caller's
    connection. On a SQLite file they are not dropped: the connection is taken out of the pool
    and closed when the caller ends with it, and SQLite deletes the connection's temporary file
    whole, where a DROP first walks every page of a table onto the free list (20 s of a
    province's first night for the sync's table of 8.5M rows, 6.5 s for 督导统计's). The tables
    stay until then, so a `create` of one on the same connection must check first. In memory
    (the one connection is the database) and on PostgreSQL: DROP."""
    if conn.dialect.name == "sqlite" and (conn.engine.url.database or ":memory:") != ":memory:":
        conn.connection.detach()
        return
    drop_if_there(conn, *tables, views=views)


def drop_if_there(conn: Connection, *tables: sa.Table, views: Iterable[str] = ()) -> None:
    """DROP the temporary views, then the tables under them, that this connection has."""
    for view in views:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
    for table in tables:
        table.drop(conn, checkfirst=True)


def bulk_insert(conn: Connection, name: str, table: pa.Table) -> None:
    """Append an Arrow table to the table `name` (columns by name, inside the caller's
    transaction): PostgreSQL's COPY, or SQLite's executemany on plain tuples. Money
    columns must come as decimal(., 2); they are written as the Money type would."""
    if conn.dialect.name == "postgresql":
        _copy(conn, name, table)
        return
    cols = []
    for col in table.columns:
        if pa.types.is_decimal(col.type):
            col = col.cast(pa.string())               # canonical money text, as Money binds it
        elif pa.types.is_date(col.type):
            col = col.cast(pa.string())               # ISO, as SQLAlchemy's Date stores it
        elif pa.types.is_boolean(col.type):
            col = col.cast(pa.int8())
        cols.append(col)
    sql = f"INSERT INTO {name} ({', '.join(table.column_names)}) VALUES ({', '.join('?' * table.num_columns)})"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        for batch in pa.table(cols, names=table.column_names).to_batches(max_chunksize=100_000):
            cursor.executemany(sql, zip(*(c.to_pylist() for c in batch.columns)))
    finally:
        cursor.close()


def _copy(conn: Connection, name: str, table: pa.Table) -> None:
    """COPY an Arrow table into PostgreSQL as CSV (null: an unquoted empty field)."""
    import io

    import pyarrow.csv as pacsv

    sql = f"COPY {name} ({', '.join(table.column_names)}) FROM STDIN WITH (FORMAT csv)"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        for batch in table.to_batches(max_chunksize=200_000):
            buf = io.BytesIO()
            pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
            if hasattr(cursor, "copy_expert"):       # psycopg2
                buf.seek(0)
                cursor.copy_expert(sql, buf)
            else:                                    # psycopg 3
                with cursor.copy(sql) as copy:
                    copy.write(buf.getvalue())
    finally:
        cursor.close()
