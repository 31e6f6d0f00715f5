"""Masking: phone numbers and personal names never reach logs or the run
report in clear (`mask_phone`, `mask_name`, `mask_text`, `MaskingFilter`,
`mask_logger`). Received files are guarded and read by pipelines/received.py.
"""
from __future__ import annotations

import logging
import re
import traceback


# ---------------------------------------------------------------- masking

# A mainland mobile number (11 digits from 1[3-9]) not inside a longer number
# (a USCC or an amount is left alone).
_MOBILE = re.compile(r"(?<![0-9A-Za-z])(1[3-9]\d)(\d{4})(\d{4})(?![0-9A-Za-z])")


def mask_phone(value: object) -> str:
    """`13812345678` -> `138****5678`; other text: all but the last 4 digits hidden."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    m = _MOBILE.fullmatch(text)
    if m:
        return f"{m.group(1)}****{m.group(3)}"
    digits = len(text)
    return "*" * max(digits - 4, 0) + text[-4:] if digits > 4 else "*" * digits


def mask_account(value: object) -> str:
    """A bank account as logs, the run report and answers show it: its last four digits."""
    digits = "".join(ch for ch in ("" if value is None else str(value)) if ch.isdigit())
    return f"****{digits[-4:]}" if digits else ""


def mask_name(value: object) -> str:
    """A personal name: `张三` -> `张*`, `欧阳娜娜` -> `欧***`."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    return text[0] + "*" * max(len(text) - 1, 1)


def mask_text(text: object) -> str:
    """Free text (a log line, a reason) with every mobile number masked."""
    return _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", "" if text is None else str(text))


class MaskingFilter(logging.Filter):
    """Masks mobile numbers in a record's message and traceback before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        record.msg, record.args = mask_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


_FILTER = MaskingFilter()


def mask_logger(logger: logging.Logger | logging.Handler) -> None:
    """Attach the masking filter once (to a logger: its own records; to a handler: all it writes)."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
