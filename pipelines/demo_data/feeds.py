"""Each feed's delivery as row arrays + a renderer that turns any slice of rows into text columns."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.contracts import CERTIFICATIONS, CREDIT_LISTS, CREDIT_RATINGS, FEEDS, Feed
from pipelines.demo_data.arrays import (
    _dates_text,
    _decimal_text,
    _join,
    _null_where,
    _pick,
    _rng,
    _text,
    _weighted,
)
from pipelines.demo_data.dates import _days, _period_text
from pipelines.demo_data.vocabulary import (
    DIVISIONS, ET_COOP, ET_SHOP, ETYPES, GIVEN, INDUSTRIES, MOBILE_PREFIXES, NAME_PREFIXES, ROADS,
    STATUS_WEIGHTS, STREETS, SUFFIXES, SURNAMES, VILLAGES, ZIHAO
)
from pipelines.demo_data.world import World


@dataclass
class Frame:
    """One delivery before it is written: n rows rendered on demand as text columns."""
    feed: Feed
    delivery: date
    n: int
    ent: np.ndarray                                   # world index per row
    render: Callable[[np.ndarray], dict[str, pa.Array]]
    protected: np.ndarray                             # rows never picked for defects
    code_columns: tuple[str, ...] = ("uscc",)          # columns that get normalisable spellings


def registry_frame(world: World, delivery: date, keep: np.ndarray) -> Frame:
    ent = np.flatnonzero(world.in_registry & keep & (world.established < _days(delivery)))
    w = world
    d_start = _days(delivery) * 86400

    def render(idx: np.ndarray) -> dict[str, pa.Array]:
        e = ent[idx]
        zihao = _pick(ZIHAO, w.zihao[e])
        second = _null_where(_pick(ZIHAO, np.maximum(w.zihao2[e], 0)), w.zihao2[e] < 0)
        name = _join(_pick(NAME_PREFIXES, w.name_prefix[e]), zihao, pc.fill_null(second, ""),
                     _pick(w.words, w.word[e]), _pick(SUFFIXES, w.suffix[e]))
        div = w.division[e]
        street = w.street[e]
        urban = street < 8
        county = _pick([f"河南省南阳市{nm}" for _, nm in DIVISIONS], div)
        local = pc.if_else(
            pa.array(urban | (div != 0)),
            _join(_pick(ROADS, w.road[e]), _text(w.house[e]), pa.scalar("号")),
            _join(_pick(VILLAGES, w.house[e] % len(VILLAGES)), _text(w.house[e] % 12 + 1), pa.scalar("组")),
        )
        address = _join(county, pc.if_else(pa.array(div == 0), _pick(STREETS, street), pa.scalar("")),
                        local)
        cap = w.capital[e]
        cap_text = pc.if_else(pa.array(w.capital_whole[e]), _decimal_text(np.maximum(cap, 0), 4, 0),
                              _decimal_text(np.maximum(cap, 0), 4, 4))
        phone = _join(_pick(MOBILE_PREFIXES, np.maximum(w.phone_prefix[e], 0)),
                      pc.utf8_lpad(_text(w.phone_digits[e]), 8, "0"))
        est = w.established[e]
        est_sec = est * 86400
        upd = d_start - 1 - ((d_start - 1 - est_sec) * w.update_v[e] ** 3).astype(np.int64)
        return {
            "uscc": w.uscc.take(pa.array(e)),
            "name": name,
            "legal_rep": _join(_pick(SURNAMES, w.surname[e]), _pick(GIVEN, w.given[e])),
            "established_on": _dates_text(est),
            "registered_capital_10k": _null_where(cap_text, cap < 0),
            "industry_code": _pick([i[0] for i in INDUSTRIES], w.industry[e]),
            "enterprise_type": _pick([t[0] for t in ETYPES], w.etype[e]),
            "status": _pick([s for s, _ in STATUS_WEIGHTS], w.status[e]),
            "division_code": _pick([c for c, _ in DIVISIONS], div),
            "address": address,
            "phone": _null_where(phone, w.phone_prefix[e] < 0),
            "abnormal": _pick(("否", "是"), w.abnormal[e].astype(np.int64)),
            "updated_at": pa.array(upd, pa.timestamp("s")).cast(pa.string()),
        }

    return Frame(FEEDS["registry"], delivery, len(ent), ent, render, world.boundary[ent],
                 ("uscc", "industry_code", "division_code"))


@dataclass
class TaxData:
    ent: np.ndarray          # world index per tax enterprise
    has: np.ndarray          # (k, 2) bool: [older year, newer year]
    revenue: np.ndarray      # (k, 2) 元
    tax: np.ndarray          # (k, 2) 分
    rd: np.ndarray           # (k, 2) 元
    places: np.ndarray       # decimals the enterprise's revenue is written with
    rating: np.ndarray       # (k, 2)
    general: np.ndarray
    boundary: np.ndarray


def build_tax(world: World) -> TaxData:
    rng = _rng(world.seed, 2)
    w = world
    p = np.where(w.etype == ET_SHOP, 0.35, np.where(w.etype == ET_COOP, 0.5, 0.9))
    p = np.where(w.in_registry, p, 0.7)
    ent = np.flatnonzero(rng.random(w.n) < p)
    k = len(ent)
    years = _weighted(rng, (0.9, 0.07, 0.03), k)            # both, newer only, older only
    has = np.stack([years != 1, years != 2], axis=1)
    places = _weighted(rng, (0.6, 0.2, 0.2), k) + 2
    q = 10 ** (4 - places)
    newer = w.revenue[ent]
    growth = np.exp(rng.normal(0.05, 0.25, k))
    older = (newer / growth).astype(np.int64)
    revenue = np.stack([older, newer], axis=1) // q[:, None] * q[:, None]
    rate = rng.uniform(0.004, 0.06, k)
    tax = (revenue * rate[:, None] * 100).astype(np.int64)
    tax[rng.random(k) < 0.01, 0] = 0                          # no tax the year before: growth undefined
    boundary = w.boundary[ent] | (rng.random(k) < 0.01)
    # exactly +20 % (tax growth boundary) and exactly 3 % R&D ratio
    b20 = boundary & (rng.random(k) < 0.5)
    base = rng.integers(1_000, 2_000_000, int(b20.sum())) * 5
    tax[b20, 0], tax[b20, 1] = base, base // 5 * 6
    innovative = np.isin(np.asarray([INDUSTRIES[i][0][0] for i in range(len(INDUSTRIES))])[w.industry[ent]],
                         ["C", "I", "M"]) & (rng.random(k) < 0.25)
    ratio = rng.uniform(0.005, 0.08, k)
    rd = np.where(innovative[:, None], (revenue * ratio[:, None]).astype(np.int64) // q[:, None] * q[:, None], 0)
    b3 = boundary & ~b20
    revenue[b3] = revenue[b3] // 10_000 * 10_000
    rd[b3] = revenue[b3] * 3 // 100
    rating = _weighted(rng, (0.3, 0.5, 0.15, 0.04, 0.01), k)
    rating = np.stack([rating, np.where(rng.random(k) < 0.1, _weighted(rng, (0.3, 0.5, 0.15, 0.04, 0.01), k),
                                        rating)], axis=1)
    general = (newer >= 5_000_000) | (rng.random(k) < 0.2)
    return TaxData(ent, has, revenue, tax, rd, places, rating, general, boundary)


def tax_frame(world: World, td: TaxData, delivery: date, keep: np.ndarray) -> Frame:
    present = td.has & keep[td.ent][:, None]
    rows_e, rows_slot = np.nonzero(present)                  # enterprise-major, older year first
    year_of = np.asarray([delivery.year - 2, delivery.year - 1])

    def render(idx: np.ndarray) -> dict[str, pa.Array]:
        i, s = rows_e[idx], rows_slot[idx]
        return {
            "uscc": world.uscc.take(pa.array(td.ent[i])),
            "tax_year": _text(year_of[s]),
            "revenue_10k": _decimal_text(td.revenue[i, s], 4, td.places[i]),
            "tax_paid": _decimal_text(td.tax[i, s], 2, 2),
            "rd_expense_10k": _decimal_text(td.rd[i, s], 4, td.places[i]),
            "credit_rating": _pick(CREDIT_RATINGS, td.rating[i, s]),
            "general_taxpayer": _pick(("否", "是"), td.general[i].astype(np.int64)),
        }

    return Frame(FEEDS["tax"], delivery, len(rows_e), td.ent[rows_e], render, td.boundary[rows_e])


@dataclass
class InsuranceData:
    ent: np.ndarray
    first_month: int                 # month index of column 0
    present: np.ndarray              # (k, 14)
    insured: np.ndarray              # (k, 14) int32
    hires: np.ndarray
    graduates: np.ndarray
    arrears: np.ndarray              # (k, 14) bool
    boundary: np.ndarray


def build_insurance(world: World, newest_month: int) -> InsuranceData:
    """14 months ending at `newest_month`: the current delivery shows the last 13, the previous the first 13."""
    rng = _rng(world.seed, 3)
    w = world
    active = w.status <= 1
    p = np.where(w.etype == ET_SHOP, 0.15, 0.85) * np.where(active, 1.0, 0.4)
    p = np.where(w.in_registry, p, 0.6)
    ent = np.flatnonzero((rng.random(w.n) < p) & (w.established < _days(world.as_of) - 20))
    k, months = len(ent), 14
    first = newest_month - (months - 1)
    est = w.established[ent].astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    start = np.clip(est - first, 0, months)
    col = np.arange(months)
    present = col[None, :] >= start[:, None]
    stopped = ~active[ent]
    end = np.where(stopped, rng.integers(0, months + 4, k), months)
    present &= col[None, :] < end[:, None]
    gap = rng.random(k) < 0.02
    gap_col = rng.integers(1, months - 1, k)
    present[gap, gap_col[gap]] = False

    e = w.employees[ent].astype(np.float64)
    steps = rng.normal(0, 1, (k, months - 1)) * np.maximum(0.4, 0.03 * e)[:, None]
    back = np.concatenate([np.cumsum(steps[:, ::-1], axis=1)[:, ::-1], np.zeros((k, 1))], axis=1)
    insured = np.maximum(0, np.rint(e[:, None] - back)).astype(np.int32)
    insured[:, -1] = w.employees[ent]
    # exactly 10 insured in every month (insured_avg_12m boundary)
    ten = rng.random(k) < 0.004
    insured[ten] = 10
    present[ten] = True
    growth = np.maximum(0, np.diff(insured, axis=1, prepend=insured[:, :1]))
    hires = (growth + rng.poisson(0.015 * insured)).astype(np.int32)
    hires[ten] = 0
    grad_p = np.where(rng.random(k) < 0.3, rng.uniform(0.1, 0.6, k), 0.0)
    graduates = rng.binomial(hires, grad_p[:, None]).astype(np.int32)
    in_arrears = rng.random(k) < 0.03
    arrears = (col[None, :] >= (months - rng.integers(1, 7, k))[:, None]) & in_arrears[:, None]
    arrears |= rng.random((k, months)) < 0.005
    arrears[ten] = False
    boundary = w.boundary[ent] | ten
    return InsuranceData(ent, first, present, insured, hires, graduates, arrears, boundary)


def insurance_frame(world: World, si: InsuranceData, delivery: date, keep: np.ndarray, offset: int) -> Frame:
    """offset 1: columns 1..13 (current); 0: columns 0..12 (the previous delivery)."""
    window = si.present[:, offset:offset + 13] & keep[si.ent][:, None]
    rows_e, rows_c = np.nonzero(window)
    rows_e = rows_e.astype(np.int64)
    rows_c = (rows_c + offset).astype(np.int64)
    periods = [_period_text(si.first_month + c) for c in range(si.present.shape[1])]

    def render(idx: np.ndarray) -> dict[str, pa.Array]:
        i, c = rows_e[idx], rows_c[idx]
        return {
            "uscc": world.uscc.take(pa.array(si.ent[i])),
            "period": _pick(periods, c),
            "insured_count": _text(si.insured[i, c]),
            "new_hires": _text(si.hires[i, c]),
            "graduates_hired": _text(si.graduates[i, c]),
            "arrears": _pick(("否", "是"), si.arrears[i, c].astype(np.int64)),
        }

    return Frame(FEEDS["social_insurance"], delivery, len(rows_e), si.ent[rows_e], render, si.boundary[rows_e])


@dataclass
class TechData:
    ent: np.ndarray
    cert: np.ndarray
    issued: np.ndarray
    expires: np.ndarray
    serial: np.ndarray


def build_tech(world: World) -> TechData:
    rng = _rng(world.seed, 4)
    w = world
    sector = np.asarray([i[0][0] for i in INDUSTRIES])[w.industry]
    p = np.where(np.isin(sector, ["C", "I", "M"]), 0.07, 0.01)
    p = np.where((w.etype <= 2) & (w.status <= 1) & w.in_registry, p, 0.0)
    holders = np.flatnonzero(rng.random(w.n) < p)
    second = holders[rng.random(len(holders)) < 0.2]
    ent = np.sort(np.concatenate([holders, second]))
    k = len(ent)
    cert = _weighted(rng, (0.3, 0.6, 0.08, 0.02), k)
    # an enterprise with two certificates holds two different kinds
    dup = np.concatenate([np.zeros(min(k, 1), dtype=bool), ent[1:] == ent[:-1]])   # (none: no holders)
    cert[dup] = (cert[np.flatnonzero(dup) - 1] + 1 + rng.integers(0, 3, int(dup.sum()))) % 4
    today = _days(world.as_of)
    issued = today - rng.integers(1, 4 * 365, k)
    future = rng.random(k) < 0.03
    issued[future] = today + rng.integers(1, 60, int(future.sum()))
    issued = np.maximum(issued, w.established[ent] + 365)
    span = np.where(cert == 1, 365, 1096)          # one year for 科技型中小企业, three for the others
    expires = issued + span - 1
    edge = (rng.random(k) < 0.01) & (issued <= today)
    expires[edge] = today                                     # valid through as_of exactly
    return TechData(ent, cert, issued, expires, rng.integers(0, 1_000_000, k))


def tech_frame(world: World, td: TechData, delivery: date, keep: np.ndarray) -> Frame:
    rows = np.flatnonzero(keep[td.ent])
    year = td.issued.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970

    def render(idx: np.ndarray) -> dict[str, pa.Array]:
        r = rows[idx]
        c = td.cert[r]
        y = _text(year[r])
        serial = td.serial[r]
        six = pc.utf8_lpad(_text(serial), 6, "0")
        four = pc.utf8_lpad(_text(serial % 10_000), 4, "0")
        number = pc.choose(
            pa.array(c.astype(np.int8)),
            _join(pa.scalar("GR"), y, pa.scalar("41"), six),                       # 高新技术企业
            _join(y, pa.scalar("411303A"), pc.utf8_slice_codeunits(six, 1, 6)),                                         # 科技型中小企业
            _join(pa.scalar("豫ZJTX"), y, four),                                          # 专精特新
            _join(pa.scalar("XJR"), y, four),                                              # 小巨人
        )
        return {
            "uscc": world.uscc.take(pa.array(td.ent[r])),
            "certification": _pick(CERTIFICATIONS, c),
            "cert_no": number,
            "issued_on": _dates_text(td.issued[r]),
            "expires_on": _dates_text(td.expires[r]),
        }

    return Frame(FEEDS["tech"], delivery, len(rows), td.ent[rows], render, np.zeros(len(rows), dtype=bool))


@dataclass
class CreditData:
    ent: np.ndarray
    kind: np.ndarray
    listed: np.ndarray
    removed: np.ndarray       # -1: still listed


def build_credit(world: World) -> CreditData:
    rng = _rng(world.seed, 5)
    w = world
    ent = np.sort(np.flatnonzero(rng.random(w.n) < np.where(w.status >= 2, 0.03, 0.008)))
    k = len(ent)
    today = _days(world.as_of)
    listed = today - rng.integers(0, 5 * 365, k)
    removed = np.where(rng.random(k) < 0.3, listed + rng.integers(30, 1000, k), -1)
    removed = np.where(removed > today, today, removed)
    edge = rng.random(k) < 0.02
    listed[edge & (removed < 0)] = today                      # listed on as_of exactly
    return CreditData(ent, _weighted(rng, (0.7, 0.2, 0.1), k), listed, removed)


def credit_frame(world: World, cd: CreditData, delivery: date, keep: np.ndarray) -> Frame:
    d = _days(delivery)
    # what the list looked like on the delivery date: not yet listed rows absent, later removals not yet known
    rows = np.flatnonzero(keep[cd.ent] & (cd.listed <= d))
    removed = np.where(cd.removed > d, -1, cd.removed)

    def render(idx: np.ndarray) -> dict[str, pa.Array]:
        r = rows[idx]
        return {
            "uscc": world.uscc.take(pa.array(cd.ent[r])),
            "list_type": _pick(CREDIT_LISTS, cd.kind[r]),
            "listed_on": _dates_text(cd.listed[r]),
            "removed_on": _null_where(_dates_text(np.maximum(removed[r], 0)), removed[r] < 0),
        }

    return Frame(FEEDS["credit"], delivery, len(rows), cd.ent[rows], render, np.zeros(len(rows), dtype=bool))
