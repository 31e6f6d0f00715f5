"""The clerk's text of a numeric portrait value: made from the typed column (`number_column`,
what the engine uses) it is the text made from the evidence's JSON (`value_column`, what
`explain` and old evidence use), for integers, money and ratios, rounding ties included."""
from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
from hypothesis import given, settings, strategies as st

from pipelines.contracts import PORTRAIT_SCHEMA
from pipelines.evidence import json_actual, number_column, value_column

FIELDS = ("age_years", "insured_count", "tax_paid", "revenue_10k", "insured_avg_12m", "tax_growth", "rd_ratio")


def values_of(field: str):
    scale = PORTRAIT_SCHEMA.field(field).type.scale if pa.types.is_decimal(PORTRAIT_SCHEMA.field(field).type) else 0
    if not scale:
        return st.integers(-10**15, 10**15)
    # ties at the second (or, for a ratio's percentage, fourth) decimal, tiny and large values
    ties = st.integers(-10**9, 10**9).map(lambda n: Decimal(n) / 1000 + Decimal("0.005"))
    return st.decimals(min_value=Decimal(-10**12), max_value=Decimal(10**12), places=scale) | ties \
        | st.sampled_from([Decimal(0), Decimal("0.000001"), Decimal("-0.000045"), Decimal("99999.995")])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_typed_columns_text_is_the_jsons(data):
    field = data.draw(st.sampled_from(FIELDS))
    rows = data.draw(st.lists(st.none() | values_of(field), max_size=30))
    typed = pa.array(rows, PORTRAIT_SCHEMA.field(field).type)
    assert number_column(field, typed).to_pylist() == value_column(field, json_actual(typed)).to_pylist()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 18).flatmap(lambda scale: st.tuples(st.just(scale), st.lists(
    st.none() | st.decimals(min_value=Decimal(-10**15), max_value=Decimal(10**15), places=scale), max_size=20))))
def test_a_decimals_json_text_is_plain_without_trailing_zeros(scale_rows):
    from pipelines.evidence import decimal_json_text, decimal_text

    scale, rows = scale_rows
    got = decimal_json_text(pa.array(rows, pa.decimal128(38, scale))).to_pylist()
    assert got == [None if d is None else decimal_text(d) for d in rows]
