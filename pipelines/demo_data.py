"""Seeded demo deliveries that look like what Wolong's departments really send.

`generate` writes, for every feed of contracts.FEEDS, a complete delivery that
is fresh on `as_of` and an earlier complete one (for the row-count drift
check), in the file-drop layout `<out>/<feed>/<YYYY-MM-DD>/<file>` + `_SUCCESS`,
plus one incomplete folder that a run must leave alone. Optionally it drops
hand-made-looking name-list workbooks into an inbox.

Everything is vectorised over numpy/pyarrow so that a million enterprises
(13 million social-insurance rows) fit in a couple of minutes: a feed is a set
of row-level numpy arrays and a renderer that turns any slice of rows into
text columns; defects and normalisable spellings are sparse per-row overrides
applied while the rows are streamed to disk.

Same arguments -> byte-identical files (xlsx included: the zip timestamps and
the workbook's created/modified properties are pinned to the delivery date).
"""
from __future__ import annotations

import argparse
import io
import re
import time
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.contracts import (
    CERTIFICATIONS,
    CREDIT_LISTS,
    CREDIT_RATINGS,
    FEEDS,
    FEED_ORDER,
    WOLONG,
    Feed,
)
from pipelines.uscc import CHARSET, WEIGHTS

EPOCH = date(1970, 1, 1)
SUCCESS = "_SUCCESS"
XLSX_MAX_ROWS = 50_000          # above this the registry comes as CSV (auto format)
CSV_MAX_ROWS = 1_000_000        # departments split big exports into parts (planted duplicates ride along)
CHUNK_ROWS = 250_000
CREDIT_MAX_SHARE = 0.005        # credit tolerates 1 % bad rows
DEFAULT_NAME_LISTS = ("WL-RS-2026-04", "WL-GX-2026-02")

# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

ZIHAO = (
    "鑫源 华盛 宏达 恒通 瑞丰 金诚 卧龙 宛都 玉泉 独山 白河 仲景 诸葛 伏牛 汉韵 豫宛 宏远 兴隆 昌盛 永盛 "
    "福源 嘉禾 和泰 聚鑫 博远 众成 润丰 康泰 恒信 正大 天润 金源 汇通 鼎盛 中原 宛诚 龙腾 明辉 盛世 德隆 "
    "宏图 佳美 顺达 益民 安康 卓越 志远 华宇 宏宇 亿达 金鹏 腾飞 新锐 恒泰 东升 荣达 信达 万通 鸿运 瑞祥 "
    "祥和 富源 泰和 锦程 金桥 天和 大成 隆盛 丰收 绿源 清源 玉润 玉缘 艾香 宛艾 卧岗 梅溪 淯阳 南都 汉风 "
    "楚韵 豫龙 精诚 远航 恒达 创源 晟泰 中鼎 弘毅 伟业 久盛 嘉信 合力 同创 华瑞 众邦 力拓 博瑞 天宇 金盛"
).split()
SURNAMES = (
    "王 李 张 刘 陈 杨 赵 黄 周 吴 徐 孙 胡 朱 高 林 何 郭 马 罗 梁 宋 郑 谢 韩 唐 冯 于 董 程 曹 袁 邓 许 "
    "傅 沈 曾 彭 吕 苏 卢 蒋 蔡 贾 丁 魏 薛 叶 阎 余 潘 杜 戴 夏 钟 汪 田 任 姜 范 方 石 姚 谭 廖 邹 熊 金 陆 "
    "郝 孔 白 崔 康 毛 邱 秦 江 史 顾 侯 邵 孟 龙 万 段 雷 钱 汤 尹 黎 易 常 武 乔 贺 赖 龚 文 闫 岳 翟 申"
).split()
GIVEN = (
    "伟 芳 娜 秀英 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀兰 霞 平 刚 桂英 建华 建国 国强 志强 海燕 "
    "红梅 春生 玉兰 金凤 德胜 文斌 晓东 建军 卫东 红霞 丽娟 俊杰 浩然 子轩 梓涵 一鸣 宇航 思远 新民 "
    "保国 振华 永刚 学军 志刚 玉梅 秀云 桂兰 长青 海峰 鹏 辉 鑫 博 帅 琳 雪 倩 颖 欣 亮 斌 峰"
).split()
STREETS = ("七一街道", "卧龙岗街道", "靳岗街道", "梅溪街道", "车站街道", "光武街道", "武侯街道", "张衡街道",
           "石桥镇", "潦河镇", "安皋镇", "蒲山镇", "陆营镇", "青华镇", "英庄镇", "谢庄镇", "潦河坡镇", "王村乡")
ROADS = ("卧龙路", "中州路", "人民路", "建设路", "车站路", "七一路", "工业路", "独山大道", "仲景路", "范蠡路",
         "光武路", "伏牛路", "滨河路", "梅溪路", "新华路", "武侯路", "信臣路", "张衡路", "卧龙岗大道", "雪枫路")
VILLAGES = ("小石桥村", "大寨村", "河湾村", "黄庄村", "李营村", "王庄村", "刘岗村", "张楼村", "新店村", "十里庙村")
# (code, name), Wolong first; the others appear in USCC positions 3-8 of enterprises registered elsewhere
DIVISIONS = ((WOLONG, "卧龙区"), ("411302", "宛城区"), ("411321", "南召县"), ("411322", "方城县"),
             ("411323", "西峡县"), ("411324", "镇平县"), ("411325", "内乡县"), ("411326", "淅川县"),
             ("411327", "社旗县"), ("411328", "唐河县"), ("411329", "新野县"), ("411330", "桐柏县"),
             ("411381", "邓州市"))
MOBILE_PREFIXES = ("130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151", "152",
                   "153", "155", "156", "157", "158", "159", "166", "173", "176", "177", "180", "181", "182",
                   "183", "185", "186", "187", "188", "189", "191", "198", "199")
STATUS_WEIGHTS = (("存续", 0.70), ("在业", 0.19), ("注销", 0.05), ("吊销", 0.03), ("迁出", 0.02), ("停业", 0.01))

# (enterprise type, share, USCC category character, name suffixes)
ETYPES = (
    ("有限责任公司(自然人投资或控股)", 0.38, "1", ("有限公司", "有限公司", "有限责任公司")),
    ("有限责任公司(自然人独资)", 0.17, "1", ("有限公司",)),
    ("股份有限公司(非上市、自然人投资或控股)", 0.03, "1", ("股份有限公司",)),
    ("个人独资企业", 0.06, "1", ("经营部", "厂", "商行")),
    ("普通合伙企业", 0.02, "1", ("中心（普通合伙）",)),
    ("个体工商户", 0.31, "2", ("",)),
    ("农民专业合作社", 0.03, "3", ("",)),
)
ET_SHOP = 5
ET_COOP = 6

# GB/T 4754-2017 class codes with the words a name uses for them:
# (code, weight among companies, company words, shop words, co-operative words)
INDUSTRIES = (
    ("C3311", 6, ("钢结构", "金属制品"), (), ()),
    ("C1713", 3, ("纺织", "印染"), (), ()),
    ("C2438", 3, ("玉器", "珠宝玉石"), ("玉器加工坊",), ()),
    ("C2740", 3, ("药业", "艾草制品"), (), ()),
    ("C3812", 2, ("防爆电机", "电机"), (), ()),
    ("C3976", 2, ("光电", "光电科技"), (), ()),
    ("C3670", 2, ("汽车配件", "汽车零部件"), (), ()),
    ("C1312", 2, ("面业", "粮油"), ("面粉加工坊",), ()),
    ("C2110", 2, ("家具",), ("家具店",), ()),
    ("C3021", 2, ("建材", "水泥制品"), (), ()),
    ("D4420", 0.3, ("电力",), (), ()),
    ("F5124", 5, ("商贸", "贸易"), (), ()),
    ("F5211", 2, ("百货",), ("百货店",), ()),
    ("F5212", 4, ("超市", "商业连锁"), ("便利店", "超市", "副食店"), ()),
    ("I6513", 3, ("软件", "网络科技", "信息技术"), (), ()),
    ("E4710", 5, ("建筑工程", "建设工程"), (), ()),
    ("G5431", 3, ("物流", "运输"), (), ()),
    ("H6210", 3, ("餐饮管理",), ("饭店", "烩面馆", "餐馆", "小吃店"), ()),
    ("H6110", 1, ("酒店",), (), ()),
    ("K7020", 2, ("物业管理", "物业服务"), (), ()),
    ("L7212", 2, ("投资", "资产管理"), (), ()),
    ("M7320", 2, ("科技", "技术研究"), (), ()),
    ("O8111", 1, ("汽车服务",), ("汽车修理部",), ()),
    ("A0141", 1, ("农业开发",), (), ("蔬菜种植专业合作社", "种植专业合作社")),
    ("A0311", 0.5, ("牧业",), (), ("养殖专业合作社",)),
)

# The size rules of policies.md, as class ranges to draw from:
# category -> class (0 micro .. 3 large) -> (employees lo, hi, revenue 万元 lo, hi)
SIZE_RANGES = {
    "industry": ((1, 19, 5, 299), (20, 299, 300, 1999), (300, 999, 2000, 39999), (1000, 2500, 40000, 150000)),
    "wholesale": ((1, 4, 20, 999), (5, 19, 1000, 4999), (20, 199, 5000, 39999), (200, 400, 40000, 120000)),
    "retail": ((1, 9, 5, 99), (10, 49, 100, 499), (50, 299, 500, 19999), (300, 600, 20000, 60000)),
    "software": ((1, 9, 5, 49), (10, 99, 50, 999), (100, 299, 1000, 9999), (300, 800, 10000, 50000)),
    "other": ((1, 9, 5, 500), (10, 99, 20, 3000), (100, 299, 500, 20000), (300, 1500, 5000, 100000)),
}
SIZE_CATEGORIES = tuple(SIZE_RANGES)
SIZE_SHARES = (0.70, 0.22, 0.065, 0.015)


def size_category(industry_code: str) -> str:
    if industry_code[:1] in ("B", "C", "D"):
        return "industry"
    if industry_code.startswith("F51"):
        return "wholesale"
    if industry_code.startswith("F52"):
        return "retail"
    if industry_code.startswith("I65"):
        return "software"
    return "other"


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent stream per purpose, so one feed's draws never shift another's."""
    return np.random.default_rng([seed, *stream])


def _days(d: date) -> int:
    return (d - EPOCH).days


def _date_of(days: int) -> date:
    return EPOCH + timedelta(days=int(days))


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


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _period_text(month_index: int) -> str:
    return f"{month_index // 12:04d}-{month_index % 12 + 1:02d}"


def _monthly(as_of: date, day: int) -> date:
    """The newest `day`-th of a month on or before as_of."""
    if as_of.day >= day:
        return as_of.replace(day=day)
    return (as_of.replace(day=1) - timedelta(days=1)).replace(day=day)


def delivery_dates(as_of: date) -> dict[str, tuple[date, date]]:
    """(current, previous) delivery date per feed: current is fresh on as_of."""
    tax = _monthly(as_of, 5)
    si = _monthly(as_of, 10)
    return {
        "registry": (as_of, as_of - timedelta(days=1)),
        "tax": (tax, _monthly(tax - timedelta(days=1), 5)),
        "social_insurance": (si, _monthly(si - timedelta(days=1), 10)),
        "tech": (as_of - timedelta(days=45), as_of - timedelta(days=136)),
        "credit": (as_of, as_of - timedelta(days=1)),
    }


# --------------------------------------------------------------------------
# USCC, vectorised
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# The world: one row per enterprise (registered or not)
# --------------------------------------------------------------------------

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


SUFFIXES = tuple(sorted({s for *_, sfx in ETYPES for s in sfx}))
NAME_PREFIXES = ("南阳市卧龙区", "南阳", "南阳市", "河南", "卧龙区")


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


# --------------------------------------------------------------------------
# Feeds as row arrays + a renderer
# --------------------------------------------------------------------------

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
    dup = np.concatenate([[False], ent[1:] == ent[:-1]])
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
        n = len(r)
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


# --------------------------------------------------------------------------
# Defects and normalisable spellings
# --------------------------------------------------------------------------

Row = dict[str, "str | None"]
DUPLICATE = "duplicate_key"


def _bad_check(row: Row, rng: np.random.Generator, d: date) -> None:
    code = row["uscc"]
    right = CHARSET.index(code[17])
    row["uscc"] = code[:17] + CHARSET[(right + 1 + int(rng.integers(0, 30))) % 31]


def _set(column: str, *values: str | None) -> Callable[[Row, np.random.Generator, date], None]:
    def apply(row: Row, rng: np.random.Generator, d: date) -> None:
        row[column] = values[int(rng.integers(0, len(values)))]
    return apply


def _negate(*columns: str) -> Callable[[Row, np.random.Generator, date], None]:
    def apply(row: Row, rng: np.random.Generator, d: date) -> None:
        col = columns[int(rng.integers(0, len(columns)))]
        value = row[col]
        positive = value is not None and Decimal(value) > 0
        row[col] = "-" + value if positive else "-" + str(int(rng.integers(1, 50)))
    return apply


def _future_established(row: Row, rng: np.random.Generator, d: date) -> None:
    row["established_on"] = (d + timedelta(days=int(rng.integers(1, 400)))).isoformat()


def _updated_late(row: Row, rng: np.random.Generator, d: date) -> None:
    moment = datetime.combine(d, datetime.min.time()) + timedelta(days=int(rng.integers(1, 30)),
                                                                  seconds=int(rng.integers(0, 86400)))
    row["updated_at"] = moment.isoformat(sep=" ")


def _rd_over_revenue(row: Row, rng: np.random.Generator, d: date) -> None:
    revenue = Decimal(row["revenue_10k"])
    row["rd_expense_10k"] = str(revenue + Decimal(int(rng.integers(1, 500))))


def _tax_year_out_of_range(row: Row, rng: np.random.Generator, d: date) -> None:
    row["tax_year"] = str(d.year + 1) if rng.random() < 0.5 else "1999"


def _period_late(row: Row, rng: np.random.Generator, d: date) -> None:
    row["period"] = _period_text(_month_index(d) + int(rng.integers(1, 4)))


def _graduates_over_hires(row: Row, rng: np.random.Generator, d: date) -> None:
    row["graduates_hired"] = str(int(row["new_hires"]) + int(rng.integers(1, 4)))


def _expires_before_issued(row: Row, rng: np.random.Generator, d: date) -> None:
    issued = date.fromisoformat(row["issued_on"])
    row["expires_on"] = (issued - timedelta(days=int(rng.integers(1, 400)))).isoformat()


def _removed_before_listed(row: Row, rng: np.random.Generator, d: date) -> None:
    listed = date.fromisoformat(row["listed_on"])
    row["removed_on"] = (listed - timedelta(days=int(rng.integers(1, 300)))).isoformat()


BAD_DATES = ("2019-02-30", "2021-13-01", "2020-06-31", "二〇一九年五月", "待核实")

# The defect kinds of feeds.md, per feed. Each turns a clean row into a bad one.
DEFECTS: dict[str, dict[str, Callable[[Row, np.random.Generator, date], None] | None]] = {
    "registry": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("name", None),
        "unparsable_date": _set("established_on", *BAD_DATES),
        "future_established_on": _future_established,
        "negative_amount": _negate("registered_capital_10k"),
        "status_not_in_list": _set("status", "存续（在营、开业、在册）", "正常", "撤销", "开业"),
        "bad_industry_code": _set("industry_code", "3311", "C33111", "U9000", "制造业"),
        "bad_division_code": _set("division_code", "41130", "4113030", "卧龙区"),
        "bad_phone": _set("phone", "0377-63125678", "1371234567", "12345678901", "138O0001111"),
        "updated_after_delivery": _updated_late,
        DUPLICATE: None,
    },
    "tax": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("tax_year", None),
        "negative_amount": _negate("revenue_10k", "tax_paid"),
        "rd_expense_over_revenue": _rd_over_revenue,
        "credit_rating_not_in_list": _set("credit_rating", "AA", "E", "优秀", "B+"),
        "tax_year_out_of_range": _tax_year_out_of_range,
        DUPLICATE: None,
    },
    "social_insurance": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("period", None),
        "unparsable_period": _set("period", "2025-13", "2025年13月", "待核实"),
        "period_after_delivery": _period_late,
        "negative_amount": _negate("insured_count"),
        "graduates_over_new_hires": _graduates_over_hires,
        DUPLICATE: None,
    },
    "tech": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("cert_no", None),
        "certification_not_in_list": _set("certification", "瞪羚企业", "高新技术企业（复审）", "省级专精特新"),
        "unparsable_date": _set("issued_on", *BAD_DATES),
        "expires_before_issued": _expires_before_issued,
        DUPLICATE: None,
    },
    "credit": {
        "invalid_check_character": _bad_check,
        "missing_required": _set("listed_on", None),
        "list_type_not_in_list": _set("list_type", "经营异常名录", "黑名单", "失信企业"),
        "unparsable_date": _set("listed_on", *BAD_DATES),
        "removed_before_listed": _removed_before_listed,
        DUPLICATE: None,
    },
}

_FULL_WIDTH = str.maketrans("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                            "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ")


def _messy(code: str, how: int) -> str:
    """A spelling the contract tells the pipeline to normalise (not a defect)."""
    if how == 0:
        return code.translate(_FULL_WIDTH)
    if how == 1:
        return code.lower()
    if how == 2:
        return " " + code + "  "
    return code[:6].translate(_FULL_WIDTH) + code[6:].lower() + " "


@dataclass
class Plan:
    """Sparse changes to a frame's rows: whole-row overrides and rows written twice."""
    rows: np.ndarray                       # sorted row numbers that are overridden
    values: dict[str, list]                # column -> new values, in `rows` order
    duplicates: np.ndarray                 # sorted row numbers written twice
    defects: dict[str, int] = field(default_factory=dict)
    normalisable: int = 0


def plan_changes(frame: Frame, share: float, rng: np.random.Generator) -> Plan:
    """Pick defect rows (each kind at least once when the feed has >= 200 rows and the threshold allows)."""
    kinds = list(DEFECTS[frame.feed.name])
    n_rows = frame.n
    if frame.feed.name == "credit":
        share = min(share, CREDIT_MAX_SHARE)
    base = int(n_rows * share + 0.5) if share > 0 else 0
    count = max(base, len(kinds)) if share > 0 and n_rows >= 200 else base
    # the every-kind minimum must not push a small feed over its rejection threshold; a duplicated key
    # may quarantine both copies, so count duplicates twice and stay under 80 % of the threshold
    limit = float(frame.feed.bad_row_threshold) * 0.8 * n_rows
    dup_at = kinds.index(DUPLICATE)

    def worst(c: int) -> int:
        return c + c // len(kinds) + (1 if c % len(kinds) > dup_at else 0)

    while count > base and worst(count) > limit:
        count -= 1
    order = [kinds[i % len(kinds)] for i in range(count)]
    free = np.flatnonzero(~frame.protected)
    count = min(len(order), len(free))
    picked = rng.choice(free, size=count, replace=False) if count else np.zeros(0, dtype=np.int64)
    assigned = dict(zip(picked.tolist(), order[:count]))
    duplicates = np.sort(np.asarray([r for r, k in assigned.items() if k == DUPLICATE], dtype=np.int64))
    broken = {r: k for r, k in assigned.items() if k != DUPLICATE}

    # ~0.5 % of the remaining rows spell a code the way departments do: full-width, lower case, spaces
    taken = np.zeros(n_rows, dtype=bool)
    taken[picked] = True
    rest = np.flatnonzero(~taken)
    n_messy = min(len(rest), int(n_rows * 0.005 + 0.5))
    messy = rng.choice(rest, size=n_messy, replace=False) if n_messy else np.zeros(0, dtype=np.int64)

    rows = np.sort(np.concatenate([np.asarray(list(broken), dtype=np.int64), messy]))
    columns = list(frame.render(np.zeros(0, dtype=np.int64)))
    values: dict[str, list] = {c: [] for c in columns}
    if len(rows):
        rendered = frame.render(rows)
        table = {c: rendered[c].to_pylist() for c in columns}
        messy_set = set(messy.tolist())
        key_columns = frame.feed.unique
        changed_keys: set[tuple] = set()
        defects: dict[str, int] = {DUPLICATE: len(duplicates)} if len(duplicates) else {}
        for pos, r in enumerate(rows.tolist()):
            row = {c: table[c][pos] for c in columns}
            if r in messy_set:
                col = frame.code_columns[int(rng.integers(0, len(frame.code_columns)))]
                if row[col]:
                    row[col] = _messy(row[col], int(rng.integers(0, 4)))
            else:
                kind = broken[r]
                original = dict(row)
                DEFECTS[frame.feed.name][kind](row, rng, frame.delivery)
                key = tuple(row[c] for c in key_columns)
                if key != tuple(original[c] for c in key_columns) and key in changed_keys:
                    # two planted rows of one enterprise met on the same key: that would be an
                    # unplanned duplicate, so this row gets a wrong check character instead
                    row = original
                    kind = "invalid_check_character"
                    _bad_check(row, rng, frame.delivery)
                    key = tuple(row[c] for c in key_columns)
                changed_keys.add(key)
                defects[kind] = defects.get(kind, 0) + 1
            for c in columns:
                values[c].append(row[c])
    else:
        defects = {DUPLICATE: len(duplicates)} if len(duplicates) else {}
    return Plan(rows, values, duplicates, defects, n_messy)


def _chunk(frame: Frame, plan: Plan, lo: int, hi: int) -> pa.Table:
    """Rows lo..hi of the delivery as a text table with canonical column names, changes applied."""
    cols = frame.render(np.arange(lo, hi, dtype=np.int64))
    a, b = np.searchsorted(plan.rows, [lo, hi])
    if b > a:
        mask = np.zeros(hi - lo, dtype=bool)
        mask[plan.rows[a:b] - lo] = True
        mask_arr = pa.array(mask)
        for c in cols:
            cols[c] = pc.replace_with_mask(cols[c], mask_arr, pa.array(plan.values[c][a:b], pa.string()))
    table = pa.table(cols)
    a, b = np.searchsorted(plan.duplicates, [lo, hi])
    if b > a:
        order = np.sort(np.concatenate([np.arange(hi - lo), plan.duplicates[a:b] - lo]), kind="stable")
        table = table.take(pa.array(order))
    return table


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------

def _write_csv(frame: Frame, plan: Plan, folder: Path, stem: str, encoding: str) -> list[Path]:
    """UTF-8 with BOM ('utf-8-sig') or GB18030, split into parts of CSV_MAX_ROWS rows."""
    header = ",".join(c.header for c in frame.feed.columns) + "\r\n"
    parts = max(1, -(-frame.n // CSV_MAX_ROWS))
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", eol="\r\n")
    written = []
    for part in range(parts):
        name = f"{stem}.csv" if parts == 1 else f"{stem}_{part + 1:02d}.csv"
        path = folder / name
        lo_part, hi_part = part * CSV_MAX_ROWS, min(frame.n, (part + 1) * CSV_MAX_ROWS)
        with path.open("wb") as fh:
            fh.write(header.encode(encoding))
            for lo in range(lo_part, hi_part, CHUNK_ROWS):
                table = _chunk(frame, plan, lo, min(hi_part, lo + CHUNK_ROWS))
                buf = io.BytesIO()
                pacsv.write_csv(table, buf, options)
                data = buf.getvalue()
                if encoding != "utf-8-sig":
                    data = data.decode("utf-8").encode(encoding)
                fh.write(data)
        written.append(path)
    return written


def _cell(value: str | None, kind: str):
    """Typed cells, as a department's Excel export has them; what does not parse stays text."""
    if value is None:
        return None
    try:
        if kind == "date":
            return date.fromisoformat(value)
        if kind == "datetime":
            return datetime.fromisoformat(value)
        if kind == "decimal":
            return Decimal(value)
    except (ValueError, InvalidOperation):
        return value
    return value


def _freeze_zip(path: Path, when: datetime) -> None:
    """Pin zip timestamps and the workbook's created/modified properties: same input, same bytes."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(path) as zf:
        entries = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            if name == "docProps/core.xml":
                text = data.decode("utf-8")
                text = re.sub(r"(<dcterms:(created|modified)[^>]*>)[^<]*", lambda m: m.group(1) + stamp, text)
                data = text.encode("utf-8")
            info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)


def _new_workbook(author: str, when: datetime, write_only: bool):
    from openpyxl import Workbook

    wb = Workbook(write_only=write_only)
    wb.properties.creator = author
    wb.properties.lastModifiedBy = author
    wb.properties.created = when
    wb.properties.modified = when
    return wb


def _write_xlsx(frame: Frame, plan: Plan, folder: Path, stem: str) -> list[Path]:
    when = datetime.combine(frame.delivery, datetime.min.time())
    wb = _new_workbook(frame.feed.department, when, write_only=True)
    ws = wb.create_sheet(frame.feed.title)
    ws.append([c.header for c in frame.feed.columns])
    kinds = [c.type for c in frame.feed.columns]
    for lo in range(0, frame.n, CHUNK_ROWS):
        table = _chunk(frame, plan, lo, min(frame.n, lo + CHUNK_ROWS))
        columns = [table.column(c.name).to_pylist() for c in frame.feed.columns]
        for values in zip(*columns):
            ws.append([_cell(v, k) for v, k in zip(values, kinds)])
    path = folder / f"{stem}.xlsx"
    wb.save(path)
    _freeze_zip(path, when)
    return [path]


FILE_FORMATS = {
    # feed -> (format, CSV encoding)
    "registry": ("auto", "utf-8-sig"),
    "tax": ("csv", "gb18030"),
    "social_insurance": ("csv", "utf-8-sig"),
    "tech": ("xlsx", "utf-8-sig"),
    "credit": ("csv", "gb18030"),
}


def _format_for(feed: str, rows: int, fmt: str) -> tuple[str, str]:
    kind, encoding = FILE_FORMATS[feed]
    if kind == "csv" or fmt == "csv":
        return "csv", encoding
    if fmt == "xlsx" or kind == "xlsx":
        return "xlsx", encoding
    return ("xlsx" if rows <= XLSX_MAX_ROWS else "csv"), encoding


def write_delivery(frame: Frame, plan: Plan, out: Path, fmt: str = "auto", complete: bool = True) -> list[Path]:
    folder = out / frame.feed.name / frame.delivery.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():                 # rerunning the generator replaces its own folder
        if old.is_file():
            old.unlink()
    stem = f"{frame.feed.title}_{frame.delivery:%Y%m%d}"
    kind, encoding = _format_for(frame.feed.name, frame.n, fmt)
    files = _write_xlsx(frame, plan, folder, stem) if kind == "xlsx" else _write_csv(frame, plan, folder, stem,
                                                                                     encoding)
    if complete:
        (folder / SUCCESS).write_bytes(b"")
    return files


# --------------------------------------------------------------------------
# Name lists for the inbox
# --------------------------------------------------------------------------

def name_list_policies(policies: Path | None) -> list[tuple[str, str, str, str]]:
    """(id, name, period, department) of the name_list policies found, else the defaults."""
    found = []
    if policies is not None and policies.is_dir():
        import yaml

        for path in sorted(policies.glob("*.y*ml")):
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except Exception:  # a broken policy file is the checker's business, not ours
                continue
            if isinstance(doc, dict) and doc.get("kind") == "name_list" and doc.get("id"):
                found.append((str(doc["id"]), str(doc.get("name") or ""), str(doc.get("period") or ""),
                              str(doc.get("department") or "")))
    if found:
        return found[:3]
    return [
        ("WL-RS-2026-04", "稳岗返还", "2026", "区人力资源和社会保障局"),
        ("WL-GX-2026-02", "高新技术企业认定奖励", "2026", "区科学技术局"),
    ]


def _amount_text(amount: int, style: int):
    """How a clerk types an amount: 12000 / '12,000.00' / '1.2万' / 12000.0."""
    if style == 0:
        return amount
    if style == 1:
        return f"{amount:,.2f}"
    if style == 2 and amount % 1000 == 0:
        return f"{Decimal(amount) / 10000:f}".rstrip("0").rstrip(".") + "万"
    return float(amount)


def _title(name: str, period: str) -> str:
    name = name.removesuffix("（名单）").removesuffix("名单").removesuffix("企业")
    return f"{period}年度{name}企业名单" if period else f"{name}企业名单"


def write_name_lists(inbox: Path, registry: Frame, world: World, as_of: date, seed: int,
                     policies: Path | None) -> list[Path]:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font

    rng = _rng(seed, 9)
    rendered = registry.render(np.arange(registry.n, dtype=np.int64))
    uscc = rendered["uscc"].to_pylist()
    names = rendered["name"].to_pylist()
    clean = np.flatnonzero((world.status[registry.ent] <= 1) & (world.division[registry.ent] == 0)
                           & (world.etype[registry.ent] <= 2))
    inactive = np.flatnonzero(world.status[registry.ent] >= 2)
    outsiders = np.flatnonzero(~world.in_registry)
    when = datetime.combine(as_of - timedelta(days=6), datetime.min.time())
    written = []
    for n_list, (pid, pname, period, dept) in enumerate(name_list_policies(policies)[:2]):
        size = min(len(clean), int(rng.integers(15, 26)))
        chosen = rng.choice(clean, size=size, replace=False) if size else []
        rows = []
        for i, r in enumerate(chosen):
            amount = int(rng.integers(2, 60)) * 1000 if n_list == 0 else int(rng.choice([100_000, 200_000, 50_000]))
            code, name, note = uscc[r], names[r], None
            if i % 7 == 3:
                code = " " + code.lower()                        # normalisable, not an error
            rows.append([code, name, _amount_text(amount, i % 4), note, amount])
        # a few row errors a department really makes
        if len(rows) >= 6:
            code = rows[1][0].strip().upper()
            rows[1][0] = code[:17] + CHARSET[(CHARSET.index(code[17]) + 5) % 31]
            rows[3][1] = rows[3][1].replace("有限公司", "有限责任公司") if "有限公司" in rows[3][1] \
                else rows[3][1] + "分公司"
            rows[5][2], rows[5][4] = None if n_list == 0 else "-5,000.00", 0
        if len(outsiders):
            o = int(rng.choice(outsiders))
            rows.append([world.uscc[o].as_py(), "南阳市卧龙区宏发商贸有限公司", _amount_text(8000, 1), None, 8000])
        if len(inactive) and n_list == 0:
            r = int(rng.choice(inactive))
            rows.append([uscc[r], names[r], _amount_text(6000, 0), "已注销", 6000])

        wb = Workbook()
        wb.properties.creator = dept or "卧龙区"
        wb.properties.created = when
        ws = wb.active
        ws.title = "Sheet1" if n_list else "名单"
        title = _title(pname, period)
        if n_list == 0:
            header = ["序号", "统一社会信用代码", "企业名称", "奖补金额（元）", "备注"]
            ws.append([title])
            ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(header))
            ws.append([f"填报单位（盖章）：南阳市卧龙区{dept.removeprefix('区')}", None, None,
                       f"填报日期：{as_of.year}年{as_of.month}月{max(1, as_of.day - 6)}日"])
        else:
            header = ["序号", "企业名称", "统一社会信用代码", "奖补金额（元）", "备注"]
            ws.append([title])
            ws.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(header))
            ws.append(["（第一批）"])
            ws.merge_cells(start_row=2, start_column=1, end_row=2, end_column=len(header))
            ws.append([])
        ws["A1"].font = Font(bold=True, size=16)
        ws["A1"].alignment = Alignment(horizontal="center")
        ws.append(header)
        total = 0
        for i, (code, name, amount, note, value) in enumerate(rows, start=1):
            cells = {"序号": i, "统一社会信用代码": code, "企业名称": name, "奖补金额（元）": amount, "备注": note}
            ws.append([cells[h] for h in header])
            total += value
            if i == len(rows) // 2:
                ws.append([])                                  # a blank row in the middle
        ws.append(["合计", None, None, f"{total:,.2f}" if n_list == 0 else total, None])
        ws.append([])
        ws.append(["制表人：" + SURNAMES[n_list] + "某某", None, "审核人：" + SURNAMES[n_list + 2] + "某某"])
        for col, width in zip("ABCDE", (6, 24, 36, 16, 12)):
            ws.column_dimensions[col].width = width
        folder = inbox / pid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{title}.xlsx"
        wb.save(path)
        _freeze_zip(path, when)
        written.append(path)

    # and a wrong file altogether: a meeting-reply form dropped into the first policy's folder
    pid = name_list_policies(policies)[0][0]
    wb = Workbook()
    wb.properties.created = when
    ws = wb.active
    ws.title = "回执"
    ws.append(["关于召开惠企政策免申即享工作推进会的参会回执"])
    ws.merge_cells("A1:D1")
    ws.append(["单位名称", "参会人员", "职务", "联系电话"])
    for i in range(3):
        ws.append([f"卧龙区{['人社局', '科技局', '财政局'][i]}", SURNAMES[i + 5] + GIVEN[i + 3], "科长",
                   MOBILE_PREFIXES[i] + f"{int(rng.integers(0, 10**8)):08d}"])
    path = inbox / pid / "参会回执.xlsx"
    wb.save(path)
    _freeze_zip(path, when)
    written.append(path)
    return written


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

def _keep(world: World, seed: int, stream: int, share: float = 0.985) -> np.ndarray:
    """Which enterprises an earlier delivery already had: the population moves by about 1.5 %."""
    return _rng(seed, 7, stream).random(world.n) < share


def generate(out: Path, as_of: date, enterprises: int, seed: int, defect_share: float = 0.02,
             inbox: Path | None = None, fmt: str = "auto", policies: Path | None = None) -> dict:
    """Write demo deliveries for every feed (current + previous + one incomplete folder).

    Returns a small JSON-able summary. `fmt` is 'auto' (registry as xlsx up to
    50,000 rows, CSV above; tech as xlsx), 'csv' or 'xlsx' (for registry and
    tech; the other feeds always come as CSV). Name-list policies are looked up
    in `policies` (default: the configured policy folder).
    """
    if fmt not in ("auto", "csv", "xlsx"):
        raise ValueError(f"unknown format {fmt!r}")
    if enterprises < 1:
        raise ValueError("enterprises must be >= 1")
    started = time.perf_counter()
    out = Path(out)
    world = build_world(enterprises, as_of, seed)
    dates = delivery_dates(as_of)
    tax = build_tax(world)
    si_newest = _month_index(dates["social_insurance"][0]) - 1
    insurance = build_insurance(world, si_newest)
    tech = build_tech(world)
    credit = build_credit(world)
    everyone = np.ones(world.n, dtype=bool)

    def frames(feed: str, current: bool) -> Frame:
        d = dates[feed][0 if current else 1]
        keep = everyone if current else _keep(world, seed, FEED_ORDER.index(feed))
        if feed == "registry":
            return registry_frame(world, d, keep)
        if feed == "tax":
            return tax_frame(world, tax, d, keep)
        if feed == "social_insurance":
            return insurance_frame(world, insurance, d, keep, 1 if current else 0)
        if feed == "tech":
            return tech_frame(world, tech, d, keep)
        return credit_frame(world, credit, d, keep)

    summary: dict = {"out": str(out), "as_of": as_of.isoformat(), "enterprises": enterprises, "seed": seed,
                     "feeds": {}}
    registry_now = None
    tech_plan = None
    for n_feed, feed in enumerate(FEED_ORDER):
        entry: dict = {}
        for current in (False, True):
            frame = frames(feed, current)
            plan = plan_changes(frame, defect_share, _rng(seed, 8, n_feed, int(current)))
            files = write_delivery(frame, plan, out, fmt)
            info = {"delivery": frame.delivery.isoformat(), "files": [str(f) for f in files],
                    "rows": frame.n + len(plan.duplicates), "defects": plan.defects,
                    "normalisable": plan.normalisable}
            if current:
                entry.update(info)
                if feed == "registry":
                    registry_now = frame
                if feed == "tech":
                    tech_plan = (frame, plan)
            else:
                entry["previous"] = info
        summary["feeds"][feed] = entry

    # an upload still in progress: newer than the tech delivery, dated <= as_of, no _SUCCESS yet
    frame, plan = tech_plan
    late = Frame(frame.feed, as_of, frame.n, frame.ent, frame.render, frame.protected)
    partial = write_delivery(late, plan, out, fmt, complete=False)
    for path in partial:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    summary["incomplete"] = str(partial[0].parent)

    if inbox is not None:
        if policies is None:
            from pipelines.config import load_settings

            policies = load_settings().policies
        summary["inbox"] = [str(p) for p in write_name_lists(Path(inbox), registry_now, world, as_of, seed,
                                                             policies)]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def format_summary(summary: dict) -> str:
    """The operator's view of what was written (Chinese)."""
    lines = [f"已生成演示数据：{summary['enterprises']} 家企业，业务日期 {summary['as_of']}，"
             f"随机种子 {summary['seed']}，输出目录 {summary['out']}"]
    for feed, info in summary["feeds"].items():
        bad = sum(info["defects"].values())
        lines.append(f"  {FEEDS[feed].title}（{feed}）：{info['delivery']} 交付 {info['rows']} 行，"
                     f"其中有意设置的问题行 {bad} 行；上一批 {info['previous']['delivery']} 共 "
                     f"{info['previous']['rows']} 行")
    lines.append(f"  未完成交付（无 _SUCCESS，应被跳过）：{summary['incomplete']}")
    if summary.get("inbox"):
        lines.append(f"  名单工作簿 {len(summary['inbox'])} 个已放入收件箱")
    lines.append(f"  用时 {summary['seconds']} 秒")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="landing folder to write into")
    parser.add_argument("--as-of", type=date.fromisoformat, required=True, help="run date YYYY-MM-DD")
    parser.add_argument("--enterprises", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--defects", type=float, default=0.02, help="share of defective rows per feed")
    parser.add_argument("--inbox", type=Path, default=None, help="also drop name-list workbooks here")
    parser.add_argument("--format", dest="fmt", choices=("auto", "csv", "xlsx"), default="auto")
    parser.add_argument("--policies", type=Path, default=None, help="policy folder (for name-list policy ids)")


def run_from_args(args: argparse.Namespace) -> dict:
    return generate(args.out, args.as_of, args.enterprises, args.seed, args.defects, args.inbox, args.fmt,
                    args.policies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mianshen demo-data", description="写入演示用的部门交付数据")
    add_arguments(parser)
    summary = run_from_args(parser.parse_args(argv))
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
