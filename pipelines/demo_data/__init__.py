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

The modules, by what they make: `vocabulary` (names, places, industries,
sizes), `world` (one row per enterprise, registered or not), `feeds` (each
feed's delivery as row arrays + a renderer), `defects` (the planted defects
and normalisable spellings), `writers` (CSV/xlsx files and `_SUCCESS`),
`name_lists` (inbox workbooks), `answers` (the confirmations and reviews that
answer a night's lists); `codes`, `dates` and `arrays` are their small
vectorised helpers. This module strings them together.

Same arguments -> byte-identical files (xlsx included: the zip timestamps and
the workbook's created/modified properties are pinned to the delivery date).
"""
from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.contracts import FEED_ORDER, FEEDS
from pipelines.demo_data.answers import write_answers  # noqa: F401  (mianshen demo-data --answers)
from pipelines.demo_data.arrays import _rng
from pipelines.demo_data.codes import uscc_check_indices, uscc_text
from pipelines.demo_data.dates import _month_index, delivery_dates
from pipelines.demo_data.defects import DEFECTS, DUPLICATE, FIELD_DEFECTS, Plan, plan_changes
from pipelines.demo_data.feeds import (
    Frame,
    build_credit,
    build_insurance,
    build_tax,
    build_tech,
    credit_frame,
    insurance_frame,
    registry_frame,
    tax_frame,
    tech_frame,
)
from pipelines.demo_data.name_lists import DEFAULT_NAME_LISTS, name_list_policies, write_name_lists
from pipelines.demo_data.vocabulary import size_category
from pipelines.demo_data.world import World, build_world
from pipelines.demo_data.writers import SUCCESS, write_delivery

__all__ = [
    "DEFAULT_NAME_LISTS", "DEFECTS", "DUPLICATE", "FIELD_DEFECTS", "SUCCESS", "Frame", "Plan", "World", "add_arguments",
    "build_world", "delivery_dates", "format_summary", "generate", "main", "name_list_policies", "plan_changes",
    "run_from_args", "size_category", "uscc_check_indices", "uscc_text", "write_delivery",
]


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
        fields = sum(n for kind, n in info["defects"].items() if kind in FIELD_DEFECTS[feed])
        bad = sum(info["defects"].values()) - fields
        lines.append(f"  {FEEDS[feed].title}（{feed}）：{info['delivery']} 交付 {info['rows']} 行，"
                     f"其中有意设置的问题行 {bad} 行、字段问题（置空，行保留）{fields} 处；"
                     f"上一批 {info['previous']['delivery']} 共 {info['previous']['rows']} 行")
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
