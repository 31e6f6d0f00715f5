"""Hand-made-looking name-list workbooks (and one wrong file) for the inbox."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

from pipelines.demo_data.arrays import _rng
from pipelines.demo_data.feeds import Frame
from pipelines.demo_data.vocabulary import GIVEN, MOBILE_PREFIXES, SURNAMES
from pipelines.demo_data.world import World
from pipelines.demo_data.writers import _freeze_zip
from pipelines.uscc import CHARSET

DEFAULT_NAME_LISTS = ("WL-RS-2026-04", "WL-GX-2026-02")


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
