"""`explain`: why one enterprise has the outcome it has under one policy, in Chinese.

It reuses the engine (the one enterprise's row, evaluated with keep_all so that
not_eligible is explained too), and takes exclusive groups and budgets from the
run's matches when given, or evaluates the whole run otherwise, so that the
text always agrees with `engine.evaluate`.
"""
from __future__ import annotations

import datetime as dt
import json
from decimal import ROUND_HALF_UP, Decimal

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import contracts, engine, evidence
from pipelines.policies import FIELD_KINDS, Leaf, Node, Policy

OUTCOME_LABELS = {
    "eligible": "符合", "missing_data": "数据不全", "near_miss": "应享未享提醒（仅差一项条件）",
    "guard_failed": "前置校验未通过", "excluded_by_group": "就高不重复，未享受", "not_eligible": "不符合",
}
GUARD_LABELS = {"registered": "已在登记机关登记", "active": "存续（在业）", "not_dishonest": "未列入失信名单"}
RESULT_LABELS = {True: "符合", False: "不符合", None: "数据缺失"}
BENEFIT_LABELS = {"fixed": "定额", "rate": "按比例", "per_head": "按人数", "tiered": "分档", "from_list": "按名单金额"}


def yuan(d: Decimal | None) -> str:
    if d is None:
        return "—"
    return f"{Decimal(d).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,} 元"


def show(value, field: str | None = None) -> str:
    """A portrait or policy value as a person reads it."""
    if value is None:
        return "（无数据）"
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, (list, tuple)):
        return "、".join(show(v, field) for v in value)
    if isinstance(value, Decimal):
        return evidence.decimal_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


NEGATED_LABELS = {True: "出现，不符合", False: "未出现，符合", None: "数据缺失"}


def _leaf_text(leaf: Leaf, actual, result, negated: bool = False) -> str:
    kind = FIELD_KINDS[leaf.field]
    text = evidence.condition_text(
        {"field": leaf.field, "op": leaf.op, "value": evidence.json_value(leaf.value, kind), "negated": negated},
        evidence.json_value(actual, kind))
    labels = NEGATED_LABELS if negated else RESULT_LABELS
    return f"{text} —— {labels[result]}"


def _tri_all(values):
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _tri_any(values):
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def _node_lines(node: Node, number: str, leaf_results: dict, actuals: dict, indent: int, out: list,
                negated: bool = False) -> object:
    pad = "  " * indent
    if isinstance(node, Leaf):
        result = leaf_results.get(node.path)
        out.append(f"{pad}{number}. {_leaf_text(node, actuals.get(node.field), result, negated)}")
        return result
    header_at = len(out)
    out.append("")
    results = [_node_lines(item, f"{number}.{i + 1}", leaf_results, actuals, indent + 1, out,
                           negated != (node.op == "none"))
               for i, item in enumerate(node.items)]
    if node.op == "all":
        result, title = _tri_all(results), "以下各项均须满足"
    elif node.op == "any":
        result, title = _tri_any(results), "以下各项满足其一即可"
    else:
        anyof = _tri_any(results)
        result, title = (None if anyof is None else not anyof), "以下各项均不得出现"
    labels = NEGATED_LABELS if negated else RESULT_LABELS
    out[header_at] = f"{pad}{number}. {title} —— {labels[result]}"
    return result


def _amount_text(policy: Policy, row: dict, list_amount) -> str | None:
    b = policy.benefit
    if b is None:
        return None
    if b.type == "fixed":
        return f"定额 {yuan(b.amount)}"
    if b.type == "from_list":
        return f"按名单金额 {yuan(list_amount)}" if list_amount is not None else "名单未填写金额"
    base = row.get(b.base)
    label = contracts.FIELD_LABELS[b.base]
    if base is None:
        return f"计算基数“{label}”无数据，无法计算金额"
    base = Decimal(base)
    if b.type == "tiered":
        tiers = "；".join(f"≥{show(t.min)}：{yuan(t.amount)}" for t in b.tiers)
        hit = [t for t in b.tiers if t.min <= base]
        got = f"适用 ≥{show(hit[-1].min)} 档 → {yuan(hit[-1].amount)}" if hit else "未达到最低档 → 0 元"
        return f"{label} {show(base)}，分档（{tiers}），{got}"
    factor = b.rate if b.type == "rate" else b.amount_each
    raw = base * factor
    text = (f"{label} {show(base)} × {show(factor)} = {yuan(raw)}" if b.type == "rate"
            else f"{label} {show(base)} × {yuan(factor)} = {yuan(raw)}")
    if b.type == "rate" and b.min is not None:
        text += f"，保底 {yuan(b.min)}"
        raw = max(raw, b.min)
    if b.cap is not None:
        text += f"，封顶 {yuan(b.cap)}"
        raw = min(raw, b.cap)
    return f"{text} → {yuan(raw)}"


def _final_row(portrait, policy, uscc, as_of, name_lists, all_policies, matches):
    if matches is None:
        matches = engine.evaluate(portrait, list(all_policies) if all_policies else [policy], as_of, name_lists)
    mask = pc.and_(pc.equal(matches.column("policy_id"), pa.scalar(policy.id)),
                   pc.equal(matches.column("uscc"), pa.scalar(uscc)))
    rows = matches.filter(mask).to_pylist()
    return rows[0] if rows else None


def explain(portrait: pa.Table, policy: Policy, uscc: str, as_of: dt.date,
            name_lists: dict[str, pa.Table] | None = None, all_policies: list[Policy] | None = None,
            matches: pa.Table | None = None) -> str:
    """Chinese explanation of one policy for one enterprise, agreeing with engine.evaluate.

    `matches`: the run's results (engine.RESULT_SCHEMA), used for exclusive groups and budgets;
    without it the run is evaluated again over `all_policies` (or this policy alone).
    """
    lines = [f"政策：{policy.name}（{policy.id}，{policy.department}，期次 {policy.period}）"]
    if policy.basis:
        lines.append(f"文件依据：{policy.basis}")
    one = portrait.filter(pc.equal(portrait.column("uscc"), pa.scalar(uscc)))
    lists = None
    if policy.kind == "name_list":
        lst = (name_lists or {}).get(policy.id)
        if lst is not None:
            lst = lst.filter(pc.equal(lst.column("uscc"), pa.scalar(uscc)))
        lists = {policy.id: lst} if lst is not None else {}
    name = one.column("name")[0].as_py() if one.num_rows else None
    lines.append(f"企业：{name or '（企业画像中无此企业）'}（{uscc}）")
    lines.append(f"评估日期：{as_of}")
    if policy.repealed_on is not None and as_of >= policy.repealed_on:
        lines.append(f"结论：该政策已于 {policy.repealed_on} 废止，不作评估。")
        return "\n".join(lines)
    if not policy.in_force_on(as_of):
        lines.append(f"结论：该政策在 {as_of} 不在有效期内（{policy.valid_from} 至 {policy.valid_to}），不作评估。")
        return "\n".join(lines)
    base = engine.evaluate_policy(one, policy, as_of, lists, keep_all=True)
    if base.num_rows == 0:
        why = "该企业不在本政策的部门名单内" if policy.kind == "name_list" else "企业画像中无此企业"
        lines.append(f"结论：不符合（{why}）。")
        return "\n".join(lines)
    row0 = base.to_pylist()[0]
    stored = json.loads(evidence.render(engine.evidence_template(policy), row0["evidence_actual"],
                                        row0["evidence_result"]))
    leaf_results = {e["path"]: e["result"] for e in stored if "path" in e}
    guard_results = {e["guard"]: e["result"] for e in stored if "guard" in e}
    list_amount = next((e["amount"] for e in stored if "name_list" in e), None)
    portrait_row = one.to_pylist()[0] if one.num_rows else {}
    actuals = {f: portrait_row.get(f) for f in contracts.PORTRAIT_SCHEMA.names}

    if policy.kind == "name_list":
        lines.append("名单：该企业在部门报送的名单内" + (f"，名单金额 {yuan(Decimal(list_amount))}" if list_amount else ""))
    top = []
    if policy.conditions:
        lines.append("条件（须全部满足）：")
        for i, node in enumerate(policy.conditions):
            top.append(_node_lines(node, str(i + 1), leaf_results, actuals, 1, lines))
    else:
        lines.append("条件：无（名单即条件）" if policy.kind == "name_list" else "条件：无")
    lines.append("前置校验：")
    for g in policy.guards:
        field = engine.GUARD_FIELDS[g][0]
        lines.append(f"  {GUARD_LABELS[g]}：{contracts.FIELD_LABELS[field]} {show(actuals.get(field))} —— "
                     f"{'通过' if guard_results.get(g) else '未通过'}")
    amount_text = _amount_text(policy, actuals, Decimal(list_amount) if list_amount else None)
    if amount_text:
        lines.append(f"金额（{BENEFIT_LABELS[policy.benefit.type]}）：{amount_text}")

    outcome = row0["outcome"]
    final = _final_row(portrait, policy, uscc, as_of, name_lists, all_policies, matches) if outcome == "eligible" else None
    lines.append("结论：" + _why(policy, row0, final, _tri_all(top)))
    return "\n".join(lines)


def _why(policy: Policy, row: dict, final: dict | None, cond) -> str:
    outcome = row["outcome"]
    if outcome == "missing_data":
        if cond is True:
            return (f"数据不全：计算基数“{contracts.FIELD_LABELS[policy.benefit.base]}”无数据，无法计算金额"
                    if policy.benefit and policy.benefit.base else "数据不全：名单未填写金额") + \
                "（不予兑现，请相关部门补全数据）。"
        return "数据不全：有条件因数据缺失无法判断（不予兑现，请相关部门补全数据）。"
    if outcome == "near_miss":
        k = row["failed_item"]
        return f"应享未享提醒：仅第 {k + 1} 项条件不符合，其余条件均符合。"
    if outcome == "guard_failed":
        return f"前置校验未通过：{GUARD_LABELS[row['failed_guard']]}。"
    if outcome == "not_eligible":
        if cond is True:
            return "不符合：条件均符合，但按规则计算的金额为 0 元。"
        return "不符合：不符合的条件多于一项，或除不符合的一项外另有条件数据缺失。"
    # eligible before groups and budgets
    if policy.kind == "manual":
        return "符合（人工类政策：列入应享未享提醒名单，由部门人工办理，不进入拨付）。"
    if final is None:
        return f"符合，金额 {yuan(row['amount'])}。"
    if final["outcome"] == "excluded_by_group":
        return (f"就高不重复：与政策 {final['excluded_by']} 同属“{policy.exclusive_group}”组、同一期次，"
                f"该企业在 {final['excluded_by']} 的金额更高（金额相同时取编号较小者），"
                f"本政策金额 {yuan(final['amount'])} 仅作记录，不予兑现。")
    text = f"符合，金额 {yuan(final['amount'])}。"
    if final["amount"] != row["amount"]:
        text = (f"符合，按规则计算金额 {yuan(row['amount'])}；本政策符合条件金额合计超出预算 {yuan(policy.budget)}，"
                f"按比例核减（向下取整到分）为 {yuan(final['amount'])}。")
    if final["over_budget"]:
        text += f"本政策符合条件金额合计超出预算 {yuan(policy.budget)}，拨付暂缓，待人工确认放行。"
    return text


def explain_command(settings, uscc: str, policy_id: str, as_of: dt.date | None = None) -> str:
    """`mianshen explain USCC POLICY_ID [--as-of D]`: reads the run's files; as_of defaults to the newest portrait."""
    import pyarrow.parquet as pq

    from pipelines import match
    from pipelines.policies import load_dir
    from pipelines.uscc import normalise_code

    if as_of is None:
        dates = settings.portrait_dates()
        if not dates:
            return f"未找到企业画像（{settings.portraits}），请先运行流水线。"
        as_of = dates[-1]
    path = settings.portrait_path(as_of)
    if not path.exists():
        return f"未找到 {as_of} 的企业画像（{path}）。"
    loaded, _errors = load_dir(settings.policies)
    policy = next((p for p in loaded if p.id == policy_id), None)
    if policy is None:
        return f"未找到政策 {policy_id}（或该政策文件有错误，请运行 mianshen policies check）。"
    matches_path = settings.matches_path(as_of)
    code = normalise_code(uscc)
    # Only this result's row: a province's night holds tens of millions.
    matches = pq.read_table(matches_path, filters=[("policy_id", "==", policy.id), ("uscc", "==", code)]) \
        if matches_path.exists() else None
    name_lists = match.load_name_lists(settings, [policy.id]) if policy.kind == "name_list" else None
    return explain(pq.read_table(path), policy, code, as_of, name_lists,
                   all_policies=loaded, matches=matches)
