"""统一社会信用代码 (GB 32100-2015): normalisation and the check character."""
from __future__ import annotations

import unicodedata

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_VALUE = {c: i for i, c in enumerate(CHARSET)}
WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def normalise_code(raw: object) -> str:
    """Full-width to half-width (NFKC), spaces removed, upper case."""
    if raw is None:
        return ""
    text = unicodedata.normalize("NFKC", str(raw))
    return "".join(text.split()).upper()


def check_character(first17: str) -> str | None:
    """The 18th character for the first 17; None when one of them is not in the charset."""
    total = 0
    for ch, weight in zip(first17, WEIGHTS):
        value = _VALUE.get(ch)
        if value is None:
            return None
        total += value * weight
    return CHARSET[(31 - total % 31) % 31]


def is_valid(code: str) -> bool:
    return (
        isinstance(code, str)
        and len(code) == 18
        and code[17] in _VALUE
        and check_character(code[:17]) == code[17]
    )


def complete(first17: str) -> str:
    """Append the check character (used by the demo-data generator and tests)."""
    check = check_character(first17)
    if check is None:
        raise ValueError(f"not a USCC body: {first17!r}")
    return first17 + check
