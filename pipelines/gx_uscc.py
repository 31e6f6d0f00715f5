"""A Great Expectations custom expectation: the GB 32100-2015 check character.

Importing this module registers `expect_column_values_to_be_valid_uscc`
(metric `column_values.valid_uscc`) with GX, so the suites in expectations/
can name it like any built-in expectation.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)

from pipelines.uscc import CHARSET, WEIGHTS, is_valid

# byte -> position in CHARSET, -1 for any byte that is not a code character
_VALUE = np.full(256, -1, dtype=np.int64)
_VALUE[np.frombuffer(CHARSET.encode("ascii"), dtype=np.uint8)] = np.arange(len(CHARSET))
_WEIGHTS = np.array(WEIGHTS, dtype=np.int64)


def valid_codes(values) -> np.ndarray:
    """`uscc.is_valid` for many values at once: a bool per value (null or non-text: False).

    Same rule, done column-wise: exactly 18 ASCII characters (18 bytes and 18
    characters), each in CHARSET, the 18th equal to the check character of the
    first 17. A million distinct codes take well under a second.
    """
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr is None or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return np.fromiter((is_valid(v) for v in values), dtype=bool, count=len(values))
    out = np.zeros(len(arr), dtype=bool)
    shaped = pc.and_(pc.equal(pc.binary_length(arr), 18), pc.equal(pc.utf8_length(arr), 18))
    rows = np.flatnonzero(shaped.fill_null(False).to_numpy(zero_copy_only=False))
    if rows.size == 0:
        return out
    # the candidates' bytes, 18 a row (take() gives a fresh array: offsets start at its data)
    candidates = arr.take(pa.array(rows))
    start = int(np.frombuffer(candidates.buffers()[1], dtype=np.int64 if pa.types.is_large_string(arr.type) else np.int32)[candidates.offset])
    data = np.frombuffer(candidates.buffers()[2], dtype=np.uint8)[start:start + 18 * rows.size]
    digits = _VALUE[data.reshape(rows.size, 18)]
    body_ok = (digits[:, :17] >= 0).all(axis=1)
    check = (31 - (digits[:, :17] @ _WEIGHTS) % 31) % 31
    out[rows] = body_ok & (digits[:, 17] >= 0) & (digits[:, 17] == check)
    return out


class ColumnValuesValidUscc(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_uscc"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        # Codes repeat (a 12-million-row monthly feed has far fewer enterprises):
        # check each distinct code once, column-wise.
        codes, uniques = pd.factorize(column)
        verdicts = np.append(valid_codes(uniques.array), False)  # code -1 (missing) -> False
        return pd.Series(verdicts[codes], index=column.index)


class ExpectColumnValuesToBeValidUscc(ColumnMapExpectation):
    """Expect each 统一社会信用代码 to be 18 characters with a correct check character."""

    map_metric = "column_values.valid_uscc"
    success_keys = ("mostly",)
    library_metadata: ClassVar[dict] = {"tags": ["uscc", "china"], "contributors": ["mianshen"]}
