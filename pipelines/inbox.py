"""Exactly-once intake of every file dropped into the inbox.

Layout (all under `settings.inbox`):
    <policy_id>/ _confirmations/ _reviews/ _objections/ _payments/   what senders drop
    _recoveries/ _recovery_receipts/
    _archive/<folder>/<YYYY-MM-DD>/<sha256[:12]>_<name>              taken files
    _archive/<folder>/<YYYY-MM-DD>/duplicates/<sha256[:12]>_<name>   content seen before (+ .note.txt)
    _rejected/<folder>/<YYYY-MM-DD>/<sha256[:12]>_<name>             refused files
    _outbox/<department>/<YYYY-MM-DD>/<stem>_处理结果.xlsx             the answer to every file
    _state/processed.jsonl, _state/lock                              the journal and its lock

What a file means is its handler's business (`pipelines.intake.HANDLERS`);
this module only decides *whether* a file is taken, and takes it once.

Decisions (for the README):
- Identity is content: sha256 of the bytes. A hash is processed once ever,
  whatever the file is called, in whichever folder, however often it is
  dropped; a repeat goes to `duplicates/` with a note and an answer saying so.
- The journal of processed hashes is an append-only JSON-lines file
  (`_state/processed.jsonl`) rather than a warehouse table, because the
  warehouse module is being written in parallel; it can move to the DB later
  without changing this module's behaviour. Every pass holds an exclusive
  `fcntl.flock` on `_state/lock` for its whole duration, so two passes (the
  DAG and a CLI call, say) are serialised: the second waits, then sees the
  files already moved and journaled. flock is released by the kernel when a
  process dies, so a crashed pass never blocks the next one.
- A file is settled when its mtime is at least `settle_seconds` old and its
  size and mtime did not change while it was being hashed; otherwise it is
  left for the next pass (status `waiting`). Temporary names (`~$*`, `.*`,
  `*.part`, `*.tmp`, `*.crdownload`, `*.partial`, `*.filepart`,
  `*.download`) are never looked at.
- Order of effects per file: handler → answer in the outbox → journal line
  (fsync) → move out of the drop folder. A crash before the journal line
  means the file is handled again on the next pass (handlers are idempotent
  per hash: a name list is stored under its hash); a crash after it is
  finished on the next pass by moving the file to where the journal says.
- A handler raising `intake.RetryLater` (e.g. no validated registry yet) or
  failing with an unexpected exception leaves the file in place and records
  nothing: the fault is ours, not the sender's, so the file is not refused.
  A folder without a handler (e.g. `_payments` before the ledger module
  registers one) is likewise left alone.
- Nothing is deleted or overwritten: moves use link+unlink (fails on an
  existing name) and pick `_2`, `_3`… on a clash. Symlinks (files or
  folders) are never followed: the link itself is moved to `_rejected/`.
  Every path written is checked to stay inside the inbox, and department
  names from policy files are sanitised to one path component.
- Dates in folder names are China Standard Time (UTC+8, no DST). Folders the
  inbox creates are mode 0750, answers 0640: not world-readable.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import logging
import os
import re
import stat
import tempfile
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import openpyxl

from pipelines import intake, safety
from pipelines.config import Settings, load_settings
from pipelines.outputs.workbook import neutralise

log = logging.getLogger(__name__)
safety.mask_logger(log)  # a sender's cells may reach a message: phone numbers masked

RESERVED = frozenset({"_archive", "_rejected", "_outbox", "_state"})
TEMP_PREFIXES = ("~$", ".")
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".filepart", ".download")
CHINA = timezone(timedelta(hours=8))
DIR_MODE = 0o750
FILE_MODE = 0o640
HANDLER_MODULES = ("pipelines.namelist", "pipelines.returns")


# ---- small pure helpers -----------------------------------------------------

def is_temporary(name: str) -> bool:
    return name.startswith(TEMP_PREFIXES) or name.lower().endswith(TEMP_SUFFIXES)


_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def safe_component(text: str, fallback: str = "未知") -> str:
    """One path component from any text: no separators, no `.`/`..`, no leading dot."""
    cleaned = _UNSAFE.sub("_", str(text or "")).strip().lstrip(".").strip()
    return cleaned[:120] or fallback


def local_day(now: datetime) -> str:
    return now.astimezone(CHINA).date().isoformat()


def free_path(path: Path) -> Path:
    """`path`, or `stem_2.ext`, `stem_3.ext` … whichever does not exist yet."""
    if not os.path.lexists(path):
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
        if not os.path.lexists(candidate):
            return candidate
        n += 1


# ---- file system edges ------------------------------------------------------

def _inside(root: Path, path: Path) -> Path:
    resolved = path.parent.resolve() / path.name
    if not resolved.is_relative_to(root.resolve()):
        raise ValueError(f"refusing to write outside the inbox: {path}")
    return path


def _ensure_dir(path: Path) -> Path:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
            os.chmod(d, DIR_MODE)
    return path


def _move(root: Path, src: Path, dst: Path) -> Path:
    """Move without ever replacing an existing file; returns where it went."""
    _ensure_dir(_inside(root, dst).parent)
    while True:
        target = free_path(dst)
        try:
            os.link(src, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:
            # A file system without hard links: we hold the inbox lock, so
            # checking and renaming cannot race another pass.
            if os.path.lexists(target):
                continue
            os.rename(src, target)
            return target
        os.unlink(src)
        return target


def _atomic_write(root: Path, target: Path, write) -> Path:
    """write(tmp_path) then publish under a free name; never overwrites."""
    folder = _ensure_dir(_inside(root, target).parent)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        while True:
            final = free_path(target)
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                continue
    finally:
        os.unlink(tmp)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a symlink swapped in fails here
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path):
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_journal(path: Path) -> dict[str, dict]:
    """sha256 -> the first record that processed it (later lines are duplicates)."""
    seen: dict[str, dict] = {}
    if not path.exists():
        return seen
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("journal %s line %d is not JSON (a torn write?); ignored", path, n)
                continue
            if record.get("status") in ("accepted", "rejected"):
                seen.setdefault(record["sha256"], record)
    return seen


def _append_journal(path: Path, record: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _cell(value: object):
    """A sender's cell as the answer shows it: text through the one export
    neutraliser (never a live formula, no control characters), numbers as numbers."""
    if value is None or isinstance(value, (int, float, Decimal, datetime, date, time)):
        return value
    return neutralise(str(value))


def write_answer(path: Path, summary: str, rows: list[intake.RowOutcome]) -> None:
    """The answer workbook: summary line, then the original rows with 错误说明."""
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("处理结果")
    ws.append([_cell(summary)])
    if rows:
        headers: list[str] = []
        for r in rows:
            headers += [h for h in r.values if h not in headers]
        ws.append(["原行号"] + [_cell(h) for h in headers] + ["错误说明"])
        for r in rows:
            ws.append([r.row] + [_cell(r.values.get(h)) for h in headers] + [_cell(r.error or "")])
    wb.save(path)


# ---- the pass ---------------------------------------------------------------

def _load_handlers() -> None:
    for module in HANDLER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            log.info("handler module %s not present; its folders wait", module)


class _Pass:
    def __init__(self, settings: Settings, now: datetime, settle_seconds: int):
        self.settings = settings
        self.root = settings.inbox
        self.now = now
        self.day = local_day(now)
        self.settle = settle_seconds
        self.state = _ensure_dir(self.root / "_state")
        self.journal_path = self.state / "processed.jsonl"
        self.journal: dict[str, dict] = {}

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def answer(self, department: str, original: str, summary: str, rows: list[intake.RowOutcome]) -> Path:
        stem = safe_component(Path(original).stem, "文件")
        target = self.root / "_outbox" / safe_component(department) / self.day / f"{stem}_处理结果.xlsx"
        return _atomic_write(self.root, target, lambda tmp: write_answer(tmp, summary, rows))

    def summary(self, folder: str, name: str, status: str, **extra) -> dict:
        return {"folder": folder, "file": name, "status": status, **extra}

    def reject_link(self, folder: str, path: Path) -> dict:
        reason = "文件为快捷方式（符号链接），未处理；请直接放入文件本身"
        where = _move(self.root, path, self.root / "_rejected" / safe_component(folder) / self.day / path.name)
        answer = self.answer(folder, path.name, f"未接收：{reason}", [])
        log.warning("symlink %s rejected, not followed", path)
        return self.summary(folder, path.name, "rejected", reason=reason, archived_to=self.rel(where), answer=self.rel(answer))

    def run(self) -> list[dict]:
        results: list[dict] = []
        self.journal = read_journal(self.journal_path)
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name in RESERVED or entry.name.startswith("."):
                continue
            if entry.is_symlink():
                results.append(self.reject_link(entry.name, Path(entry.path)))
                continue
            if not entry.is_dir(follow_symlinks=False):
                log.warning("%s lies in the inbox root, outside any folder; left alone", entry.path)
                continue
            for item in sorted(os.scandir(entry.path), key=lambda e: e.name):
                outcome = self.take(entry.name, item)
                if outcome is not None:
                    results.append(outcome)
        return results

    def take(self, folder: str, item: os.DirEntry) -> dict | None:
        path = Path(item.path)
        if is_temporary(item.name):
            return None
        if item.is_symlink():
            return self.reject_link(folder, path)
        before = os.lstat(path)
        if not stat.S_ISREG(before.st_mode):
            log.info("%s is not a regular file; left alone", path)
            return None
        if self.now.timestamp() - before.st_mtime < self.settle:
            return self.summary(folder, item.name, "waiting")
        sha = sha256_of(path)
        after = os.lstat(path)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return self.summary(folder, item.name, "waiting")
        prior = self.journal.get(sha)
        if prior is not None:
            return self.repeat(folder, path, sha, prior)
        return self.handle(folder, path, sha)

    def repeat(self, folder: str, path: Path, sha: str, prior: dict) -> dict:
        planned = self.root / prior.get("archived_to", "")
        if prior.get("folder") == folder and prior.get("file") == path.name and prior.get("archived_to") \
                and not os.path.lexists(planned):
            # The pass that journaled it died before the move: finish it.
            where = _move(self.root, path, planned)
            return self.summary(folder, path.name, "recovered", sha256=sha, archived_to=self.rel(where))
        when = str(prior.get("processed_at", ""))[:10]
        note = (f"该文件与{when}已处理的“{prior.get('folder')}/{prior.get('file')}”内容完全相同"
                f"（重复报送），未再次处理")
        target = self.root / "_archive" / safe_component(folder) / self.day / "duplicates" / f"{sha[:12]}_{path.name}"
        where = _move(self.root, path, target)
        _atomic_write(self.root, where.with_name(where.name + ".note.txt"),
                      lambda tmp: tmp.write_text(note + "\n", encoding="utf-8"))
        answer = self.answer(prior.get("department") or folder, path.name, f"未处理：{note}", [])
        _append_journal(self.journal_path, {
            "sha256": sha, "folder": folder, "file": path.name, "status": "duplicate",
            "processed_at": self.now.isoformat(), "archived_to": self.rel(where), "answer": self.rel(answer),
            "duplicate_of": prior.get("archived_to"),
        })
        return self.summary(folder, path.name, "duplicate", sha256=sha, reason=note,
                            archived_to=self.rel(where), answer=self.rel(answer))

    def handle(self, folder: str, path: Path, sha: str) -> dict:
        handler = intake.HANDLERS.get(folder) if folder.startswith("_") else intake.HANDLERS.get(intake.NAME_LIST)
        if handler is None:
            log.warning("no handler for inbox folder %s; %s left for later", folder, path.name)
            return self.summary(folder, path.name, "no_handler", sha256=sha)
        token = intake._RECEIVED_AT.set(self.now)
        try:
            result = handler(self.settings, path, sha, folder)
        except intake.RetryLater as e:
            log.info("%s/%s deferred: %s", folder, path.name, e)
            return self.summary(folder, path.name, "deferred", sha256=sha, reason=str(e))
        except Exception as e:  # a bug of ours: the sender's file is not refused for it
            log.exception("handler for %s failed on %s; file left in place", folder, path)
            return self.summary(folder, path.name, "error", sha256=sha,
                                reason=safety.mask_text(f"{type(e).__name__}: {e}"))
        finally:
            intake._RECEIVED_AT.reset(token)
        status = "accepted" if result.accepted else "rejected"
        bad = sum(1 for r in result.rows if r.error)
        summary = result.summary or (
            f"已接收 {len(result.rows) - bad} 行，错误 {bad} 行" if result.accepted else f"未接收：{result.reason or ''}"
        )
        department = result.department or folder
        answer = self.answer(department, path.name, summary, result.rows)
        base = "_archive" if result.accepted else "_rejected"
        planned = free_path(self.root / base / safe_component(folder) / self.day / f"{sha[:12]}_{path.name}")
        record = {
            "sha256": sha, "folder": folder, "file": path.name, "status": status, "reason": result.reason,
            "department": department, "processed_at": self.now.isoformat(),
            "archived_to": self.rel(planned), "answer": self.rel(answer),
        }
        _append_journal(self.journal_path, record)
        self.journal[sha] = record
        where = _move(self.root, path, planned)
        return self.summary(folder, path.name, status, sha256=sha, reason=result.reason, summary=summary,
                            rows=len(result.rows), errors=bad, archived_to=self.rel(where), answer=self.rel(answer))


def process(settings: Settings, now: datetime | None = None, settle_seconds: int = 60) -> list[dict]:
    """One pass over every inbox folder; one summary dict per file looked at."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if not settings.inbox.is_dir():
        return []
    _load_handlers()
    one = _Pass(settings, now, settle_seconds)
    with _locked(one.state / "lock"):
        return one.run()


def inbox_process_command(settings: Settings | None = None, settle_seconds: int = 60) -> int:
    """`mianshen inbox process`: prints one line per file; exit 0 unless a handler failed."""
    results = process(settings or load_settings(), settle_seconds=settle_seconds)
    for r in results:
        line = f"{r['folder']}/{r['file']}: {r['status']}"
        if r.get("summary") or r.get("reason"):
            line += f" — {r.get('summary') or r.get('reason')}"
        print(line)
    if not results:
        print("收件箱中没有待处理的文件")
    return 1 if any(r["status"] == "error" for r in results) else 0
