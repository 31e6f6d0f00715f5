"""大写 amounts against the rules for 中文大写金额 (整 after 元 only; 零 where the rules ask)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from pipelines.rmb import capital


@pytest.mark.parametrize("amount,expected", [
    ("0.05", "人民币伍分"),
    ("10.00", "人民币壹拾元整"),
    ("100010.10", "人民币壹拾万零壹拾元壹角"),
    ("1000000000.00", "人民币壹拾亿元整"),
    ("12000", "人民币壹万贰仟元整"),
    ("1.05", "人民币壹元零伍分"),
    ("1010", "人民币壹仟零壹拾元整"),
    ("100000000.01", "人民币壹亿元零壹分"),
    ("7500.50", "人民币柒仟伍佰元伍角"),
    ("0", "人民币零元整"),
])
def test_capital_amounts(amount, expected):
    assert capital(Decimal(amount)) == expected


def test_a_negative_amount_is_refused():
    with pytest.raises(ValueError):
        capital(Decimal("-1"))
