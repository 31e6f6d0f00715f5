"""应享未享提醒: near-miss and missing-data results, and the pre-screened
(eligible or near-miss) enterprises of manual policies, per department.

Built column-wise from the night's results (at province scale this list has
millions of rows): the text of why a result is not yet eligible is the engine's
`reason` column, and the evidence is read only for a result without one."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.evidence import failing
from pipelines.outputs.review import safe_name
from pipelines.outputs.workbook import Col, write_list

COLUMNS = (
    Col("序号", "seq", "int"),
    Col("统一社会信用代码", "uscc"),
    Col("企业名称", "name"),
    Col("联系电话", "phone"),
    Col("政策编号", "policy_id"),
    Col("政策名称", "policy_name"),
    Col("期次", "period"),
    Col("提醒类型", "reminder"),
    Col("未满足条件或缺失数据", "reason", wrap=True, max_width=70),
)

# (outcome, manual policy?) -> the reminder's type; other results are not reminded.
KINDS = {
    ("eligible", True): "人工核定类政策：预筛符合，请通知企业申报",
    ("near_miss", True): "人工核定类政策：预筛差一项，请核实",
    ("near_miss", False): "应享未享：差一项条件",
    ("missing_data", True): "数据不全：请补充数据",
    ("missing_data", False): "数据不全：请补充数据",
}


def _columns(source: pa.Table | Path, names: list[str]) -> pa.Table:
    if isinstance(source, pa.Table):
        return source.select([n for n in names if n in source.column_names])
    present = set(pq.read_schema(source).names)
    return pq.read_table(source, columns=[n for n in names if n in present])


def rows(source: pa.Table | Path, phones: dict[str, str]) -> pa.Table:
    """The reminder rows of a match table (or its Parquet file), sorted by department,
    policy, period, code, with the columns of COLUMNS (but seq).

    The evidence column is not read (at province scale it is gigabytes, more than one
    string array holds) unless a row lacks the engine's reason."""
    needed = ["department", "policy_id", "period", "uscc", "name", "policy_name", "outcome", "kind",
              "failed_item", "failed_guard", "reason"]
    matches = _columns(source, needed)
    outcome, manual = matches.column("outcome"), pc.equal(matches.column("kind"), "manual")
    wanted = pc.or_(pc.is_in(outcome, value_set=pa.array(["near_miss", "missing_data"])),
                    pc.and_(manual, pc.equal(outcome, "eligible")))
    rows_wanted = pc.indices_nonzero(wanted)
    part = matches.take(rows_wanted)
    del matches
    order = pc.sort_indices(part, sort_keys=[("department", "ascending"), ("policy_id", "ascending"),
                                             ("period", "ascending"), ("uscc", "ascending")])
    part, rows_wanted = part.take(order), rows_wanted.take(order)
    kinds = [KINDS[(o, k == "manual")] for o, k in zip(part.column("outcome").to_pylist(),
                                                        part.column("kind").to_pylist())]
    reasons = part.column("reason") if "reason" in part.column_names else pa.nulls(part.num_rows, pa.string())
    unexplained = pc.indices_nonzero(pc.and_(pc.is_null(reasons), pc.not_equal(part.column("outcome"), "eligible")))
    if len(unexplained):
        # Results written without the engine's reason column (by hand, or by an
        # older version): read the evidence row by row.
        few = part.take(unexplained).append_column(
            "evidence", _columns(source, ["evidence"]).column("evidence").take(rows_wanted.take(unexplained)))
        made = [failing(*r) for r in zip(*(few.column(c).to_pylist()
                                          for c in ("outcome", "evidence", "failed_item", "failed_guard")))]
        mask = pc.is_in(pa.array(range(part.num_rows), pa.int64()), value_set=unexplained.cast(pa.int64()))
        reasons = pc.replace_with_mask(reasons.combine_chunks() if isinstance(reasons, pa.ChunkedArray) else reasons,
                                       mask, pa.array(made, pa.string()))
    reasons = pc.fill_null(pc.if_else(pc.equal(reasons, ""), pa.scalar(None, pa.string()), reasons), "预筛条件均符合")
    codes = part.column("uscc")
    known = pa.array(list(phones), pa.string())
    phone = pc.take(pa.array(list(phones.values()), pa.string()), pc.index_in(codes, value_set=known))
    return pa.table({
        "department": part.column("department"), "uscc": codes, "name": part.column("name"),
        "phone": pc.fill_null(phone, ""), "policy_id": part.column("policy_id"),
        "policy_name": part.column("policy_name"), "period": part.column("period"),
        "reminder": pa.array(kinds, pa.string()), "reason": reasons,
    })


def write(run_dir: Path, as_of: date, matches: pa.Table | Path, phones: dict[str, str],
          unit: str) -> tuple[list[Path], int]:
    data = rows(matches, phones)
    paths = []
    departments = data.column("department")
    for department in pc.unique(departments).to_pylist():
        part = data.filter(pc.equal(departments, department))
        part = part.append_column("seq", pa.array(range(1, part.num_rows + 1), pa.int64()))
        paths.append(write_list(
            run_dir / "reminders" / f"{safe_name(department)}_应享未享提醒.xlsx",
            "惠企政策应享未享提醒清单", COLUMNS, part, unit=unit, made_on=as_of,
            subtitle=f"执行部门：{department}", sheet="提醒清单", total=False))
    return paths, data.num_rows
