"""What every handler of a dropped file returns, and the handler registry.

The inbox (pipelines/inbox.py) owns the exactly-once mechanics: noticing a
file, hashing it, archiving or rejecting it, answering the sender. What a
file *means* is a handler's business: name lists (pipelines/namelist.py) and
the returned files of the ledger (_confirmations, _reviews, _objections,
_payments) register here, so the mechanism is built once for all of them.
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pipelines.config import Settings


@dataclass
class RowOutcome:
    row: int                      # the row number the sender sees (Excel row / CSV line)
    values: dict[str, object]     # the original cells, by the sender's header
    error: str | None = None      # Chinese reason; None when the row was taken


@dataclass
class IntakeResult:
    accepted: bool                # False: the file is refused whole and goes to rejected/
    reason: str | None            # Chinese: why the whole file was refused
    rows: list[RowOutcome] = field(default_factory=list)
    summary: str = ""             # one Chinese line: 接收 N 行，错误 M 行，金额合计 X 元
    department: str | None = None # whose outbox gets the answer


# handler(settings, path of the received file, its sha256, folder name) -> IntakeResult
Handler = Callable[[Settings, Path, str, str], IntakeResult]

NAME_LIST = "*"  # key for every folder that is a policy id
HANDLERS: dict[str, Handler] = {}


def handles(folder: str) -> Callable[[Handler], Handler]:
    """Register a handler for an inbox folder (`_payments`, ..., or NAME_LIST)."""

    def register(fn: Handler) -> Handler:
        HANDLERS[folder] = fn
        return fn

    return register


class RetryLater(Exception):
    """Raised by a handler that cannot decide yet (e.g. no validated registry
    to check a name list against): the inbox leaves the file where it is,
    records nothing, and tries again on the next pass."""


# When the inbox took the file now being handled (UTC). A handler that stamps
# what it stores reads it through received_at(); set by the inbox only.
_RECEIVED_AT: ContextVar[datetime | None] = ContextVar("mianshen_received_at", default=None)


def received_at() -> datetime:
    return _RECEIVED_AT.get() or datetime.now(timezone.utc)
