"""Small numpy/pyarrow helpers shared by the world, the feeds and the name lists."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent stream per purpose, so one feed's draws never shift another's."""
    return np.random.default_rng([seed, *stream])


def _pick(options: Sequence[str], idx: np.ndarray) -> pa.Array:
    return pa.array(list(options), pa.string()).take(pa.array(np.asarray(idx, dtype=np.int64)))


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _join(*parts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _null_where(arr: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return arr
    return pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), arr)


def _dates_text(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32), pa.date32()).cast(pa.string())


def _decimal_text(units: np.ndarray, scale: int, places) -> pa.Array:
    """Non-negative integers of 10**-scale as text with `places` (int or per-row array) decimals."""
    q = 10 ** scale
    whole = _text(units // q)
    frac = pc.utf8_lpad(_text(units % q), scale, "0")
    if isinstance(places, (int, np.integer)):
        if places == 0:
            return whole
        return pc.binary_join_element_wise(whole, pc.utf8_slice_codeunits(frac, 0, int(places)), ".")
    places = np.asarray(places)
    joined = [whole] + [
        pc.binary_join_element_wise(whole, pc.utf8_slice_codeunits(frac, 0, p), ".") for p in range(1, scale + 1)
    ]
    return pc.choose(pa.array(places.astype(np.int8)), *joined)


def _weighted(rng: np.random.Generator, weights: Sequence[float], n: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum())
