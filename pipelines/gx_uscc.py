"""A Great Expectations custom expectation: the GB 32100-2015 check character.

Importing this module registers `expect_column_values_to_be_valid_uscc`
(metric `column_values.valid_uscc`) with GX, so the suites in expectations/
can name it like any built-in expectation.
"""
from __future__ import annotations

from typing import ClassVar

from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)

from pipelines.uscc import is_valid


class ColumnValuesValidUscc(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_uscc"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        # Codes repeat (a 12-million-row monthly feed has far fewer enterprises):
        # check each distinct code once.
        verdicts = {code: is_valid(code) for code in column.unique()}
        return column.map(verdicts).astype(bool)


class ExpectColumnValuesToBeValidUscc(ColumnMapExpectation):
    """Expect each 统一社会信用代码 to be 18 characters with a correct check character."""

    map_metric = "column_values.valid_uscc"
    success_keys = ("mostly",)
    library_metadata: ClassVar[dict] = {"tags": ["uscc", "china"], "contributors": ["mianshen"]}
