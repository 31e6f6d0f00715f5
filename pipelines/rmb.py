"""Amounts in 大写 (Chinese capital numerals) as the payment-settlement rules write them.

The conversion is cn2an's "rmb" mode, checked against the rules for 中文大写金额
(正确填写票据和结算凭证的基本规定): 整 after 元, none after 角 or 分, 零 where the
rules ask for one (壹拾万零壹拾元壹角, 壹元零伍分). cn2an leaves out the 人民币 the
rules put in front; that prefix is the only thing added here.
"""
from __future__ import annotations

from decimal import Decimal

import cn2an

CENT = Decimal("0.01")


def capital(amount: Decimal) -> str:
    """`Decimal("12000")` -> `人民币壹万贰仟元整`. Amounts are exact to the 分; never negative."""
    amount = Decimal(amount).quantize(CENT)
    if amount < 0:
        raise ValueError(f"a payout amount is never negative: {amount}")
    return "人民币" + cn2an.an2cn(f"{amount:.2f}", "rmb")
