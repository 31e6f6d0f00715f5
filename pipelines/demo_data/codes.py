"""USCC codes, vectorised: check characters and organisation codes for whole arrays at once."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.uscc import CHARSET, WEIGHTS

_CHARS = np.frombuffer(CHARSET.encode("ascii"), dtype=np.uint8)
_WEIGHTS = np.asarray(WEIGHTS, dtype=np.int64)
# GB 11714 values of the charset (digits 0-9, letters A=10 .. Z=35) for the organisation-code check
_GB11714 = np.asarray([int(c, 36) for c in CHARSET], dtype=np.int64)
_ORG_WEIGHTS = np.asarray((3, 7, 9, 10, 5, 8, 4, 2), dtype=np.int64)


def uscc_check_indices(body: np.ndarray) -> np.ndarray:
    """Charset index of the check character for an (n, 17) array of charset indices."""
    return (31 - (body.astype(np.int64) @ _WEIGHTS) % 31) % 31


def uscc_text(body: np.ndarray) -> pa.Array:
    """(n, 17) charset indices -> the 18-character codes, valid check character appended."""
    full = np.concatenate([body, uscc_check_indices(body)[:, None]], axis=1)
    chars = np.ascontiguousarray(_CHARS[full])
    return pa.array(chars.view("S18").ravel()).cast(pa.string())


def _org_codes(rng: np.random.Generator, new_style: np.ndarray) -> np.ndarray:
    """(n, 9) charset indices: 8 unique body characters + the GB 11714 check character.

    Codes issued since the 2015 reform start with 'MA'; older ones are the
    8-digit organisation codes.
    """
    n = len(new_style)
    body = np.empty((n, 8), dtype=np.int64)
    todo = np.arange(n)
    ma = (CHARSET.index("M"), CHARSET.index("A"))
    powers = 31 ** np.arange(8, dtype=np.int64)
    while len(todo):
        k = len(todo)
        digits = rng.integers(0, 10, size=(k, 8))
        letters = rng.integers(0, 31, size=(k, 8))
        new = new_style[todo]
        draw = np.where(new[:, None], letters, digits)
        draw[new, 0], draw[new, 1] = ma
        body[todo] = draw
        keys = body @ powers
        _, first = np.unique(keys, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        todo = np.flatnonzero(dup)
    total = (_GB11714[body] * _ORG_WEIGHTS).sum(axis=1)
    check = 11 - total % 11
    check_idx = np.where(check == 11, 0, np.where(check == 10, CHARSET.index("X"), check))
    return np.concatenate([body, check_idx[:, None]], axis=1)
