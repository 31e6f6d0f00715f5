"""The world: one row per enterprise (registered or not), drawn once per seed."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa

from pipelines.demo_data.arrays import _rng, _weighted
from pipelines.demo_data.codes import _org_codes, uscc_text
from pipelines.demo_data.dates import _days
from pipelines.demo_data.vocabulary import (
    DIVISIONS, ET_COOP, ET_SHOP, ETYPES, GIVEN, INDUSTRIES, MOBILE_PREFIXES, ROADS, SIZE_CATEGORIES,
    SIZE_RANGES, SIZE_SHARES, STATUS_WEIGHTS, STREETS, SUFFIXES, SURNAMES, ZIHAO, size_category
)


@dataclass
class World:
    as_of: date
    seed: int
    n: int
    uscc: pa.Array
    in_registry: np.ndarray
    etype: np.ndarray
    industry: np.ndarray
    size: np.ndarray
    employees: np.ndarray
    revenue: np.ndarray            # newest tax year, in 元 (= 0.0001 万元)
    established: np.ndarray        # days since 1970-01-01
    status: np.ndarray
    division: np.ndarray           # index into DIVISIONS (所属区划)
    abnormal: np.ndarray
    capital: np.ndarray            # 0.0001 万元, -1 = empty
    capital_whole: np.ndarray      # written without decimals
    name_prefix: np.ndarray
    zihao: np.ndarray
    zihao2: np.ndarray             # -1 = single 字号
    word: np.ndarray               # index into the flattened name words
    suffix: np.ndarray             # index into SUFFIXES
    surname: np.ndarray
    given: np.ndarray
    street: np.ndarray
    road: np.ndarray
    house: np.ndarray
    phone_prefix: np.ndarray       # -1 = empty
    phone_digits: np.ndarray
    update_v: np.ndarray           # where updated_at falls between established_on and delivery
    boundary: np.ndarray           # exact-boundary enterprises: never made defective
    words: tuple[str, ...] = ()



def _flat_words() -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """All name words, with (offset, count) per industry and per word kind (company, shop, co-op)."""
    words: list[str] = []
    offsets = np.zeros((len(INDUSTRIES), 3), dtype=np.int64)
    counts = np.zeros((len(INDUSTRIES), 3), dtype=np.int64)
    for i, (_code, _w, *kinds) in enumerate(INDUSTRIES):
        for k, ws in enumerate(kinds):
            offsets[i, k] = len(words)
            counts[i, k] = len(ws)
            words.extend(ws)
    return tuple(words), offsets, counts


def build_world(enterprises: int, as_of: date, seed: int) -> World:
    rng = _rng(seed, 1)
    extras = max(1, round(enterprises * 0.004)) if enterprises >= 50 else 0
    n = enterprises + extras
    in_registry = np.ones(n, dtype=bool)
    in_registry[rng.choice(n, size=extras, replace=False)] = False

    etype = _weighted(rng, [e[1] for e in ETYPES], n)
    words, offsets, counts = _flat_words()
    ind_w = np.asarray([i[1] for i in INDUSTRIES], dtype=float)
    industry = _weighted(rng, ind_w, n)
    shop_ok = np.flatnonzero(counts[:, 1] > 0)
    coop_ok = np.flatnonzero(counts[:, 2] > 0)
    shops = etype == ET_SHOP
    coops = etype == ET_COOP
    industry[shops] = shop_ok[_weighted(rng, ind_w[shop_ok], int(shops.sum()))]
    industry[coops] = coop_ok[rng.integers(0, len(coop_ok), int(coops.sum()))]
    word_kind = np.where(shops, 1, np.where(coops, 2, 0))
    word = offsets[industry, word_kind] + (rng.random(n) * counts[industry, word_kind]).astype(np.int64)

    # size class, then employees and revenue inside the class's ranges for the industry's category
    size = _weighted(rng, SIZE_SHARES, n)
    size[shops] = np.where(rng.random(int(shops.sum())) < 0.93, 0, 1)
    size[coops] = np.minimum(size[coops], 1)
    cat = np.asarray([SIZE_CATEGORIES.index(size_category(INDUSTRIES[i][0])) for i in range(len(INDUSTRIES))])[industry]
    ranges = np.asarray([SIZE_RANGES[c] for c in SIZE_CATEGORIES], dtype=np.int64)  # (cat, class, 4)
    r = ranges[cat, size]
    u = rng.random(n)
    employees = r[:, 0] + np.floor((r[:, 1] - r[:, 0] + 1) * u ** 2).astype(np.int64)
    lo, hi = np.log(r[:, 2]), np.log(r[:, 3] + 1)
    revenue_10k = np.exp(lo + (hi - lo) * rng.random(n))
    revenue = np.minimum((revenue_10k * 10_000).astype(np.int64), (r[:, 3] + 1) * 10_000 - 1)
    # exact-boundary enterprises: employees and revenue exactly at their class's lower bounds
    boundary = rng.random(n) < 0.01
    boundary &= size > 0
    employees[boundary] = r[boundary, 0]
    revenue[boundary] = r[boundary, 2] * 10_000

    # established: a third before 2010, the rest since, more of them recent
    start, end = _days(date(1993, 1, 1)), _days(as_of) - 1
    t = np.where(rng.random(n) < 0.3, rng.random(n) * 0.45, 0.45 + 0.55 * rng.random(n) ** 0.7)
    established = (start + t * (end - start)).astype(np.int64)
    established[size >= 2] -= (rng.random(int((size >= 2).sum())) * 3000).astype(np.int64)
    established = np.maximum(established, start)

    status = _weighted(rng, [w for _, w in STATUS_WEIGHTS], n)
    abnormal = rng.random(n) < np.where(status == 3, 0.6, 0.03)  # 吊销 are mostly abnormal too

    # USCC: '9' (market regulation) + category + division of registration + organisation code
    uscc_div = np.where(rng.random(n) < 0.9, 0, rng.integers(1, len(DIVISIONS), n))
    division = np.where(rng.random(n) < 0.96, 0, rng.integers(1, len(DIVISIONS), n))
    division[status == 4] = rng.integers(1, len(DIVISIONS), int((status == 4).sum()))  # 迁出: now elsewhere
    body = np.empty((n, 17), dtype=np.int64)
    body[:, 0] = 9
    body[:, 1] = np.asarray([int(e[2]) for e in ETYPES])[etype]
    div_digits = np.asarray([[int(ch) for ch in code] for code, _ in DIVISIONS])
    body[:, 2:8] = div_digits[uscc_div]
    body[:, 8:17] = _org_codes(rng, established >= _days(date(2015, 10, 1)))
    uscc = uscc_text(body)

    # registered capital (万元): round figures mostly, a fifth with four decimals; shops often blank
    figures = np.asarray([3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000], dtype=np.int64)
    base = figures[np.minimum(rng.integers(0, 8, n) + size * 2, len(figures) - 1)]
    capital_whole = rng.random(n) < 0.8
    capital = np.where(capital_whole, base * 10_000, (base * 10_000 * (0.5 + rng.random(n))).astype(np.int64))
    capital[shops & (rng.random(n) < 0.5)] = -1

    suffix = np.zeros(n, dtype=np.int64)
    for e, (_name, _share, _cat, sfx) in enumerate(ETYPES):
        sel = etype == e
        choice = np.asarray([SUFFIXES.index(s) for s in sfx])
        suffix[sel] = choice[rng.integers(0, len(choice), int(sel.sum()))]
    name_prefix = _weighted(rng, (0.5, 0.3, 0.1, 0.1, 0.0), n)
    name_prefix[shops | coops] = np.where(rng.random(int((shops | coops).sum())) < 0.5, 0, 4)

    surname = np.minimum((rng.random(n) ** 2.2 * len(SURNAMES)).astype(np.int64), len(SURNAMES) - 1)
    phone_prefix = rng.integers(0, len(MOBILE_PREFIXES), n)
    phone_prefix[rng.random(n) < 0.1] = -1
    return World(
        as_of=as_of, seed=seed, n=n, uscc=uscc, in_registry=in_registry, etype=etype, industry=industry,
        size=size, employees=employees, revenue=revenue, established=established, status=status,
        division=division, abnormal=abnormal, capital=capital, capital_whole=capital_whole,
        name_prefix=name_prefix, zihao=rng.integers(0, len(ZIHAO), n),
        zihao2=np.where(rng.random(n) < 0.3, rng.integers(0, len(ZIHAO), n), -1), word=word, suffix=suffix,
        surname=surname, given=rng.integers(0, len(GIVEN), n), street=rng.integers(0, len(STREETS), n),
        road=rng.integers(0, len(ROADS), n), house=rng.integers(1, 400, n), phone_prefix=phone_prefix,
        phone_digits=rng.integers(0, 100_000_000, n), update_v=rng.random(n), boundary=boundary, words=words,
    )
