"""The policy sandbox's page (政策沙盘): the figures `sandbox.simulate` returns, as one Chinese HTML page.

Sections: the outcomes, each condition item's effect, where the eligible
enterprises are, the budget, the overlap with the in-force policies of the
draft's exclusive group, and the sensitivity of every numeric threshold.
"""
from __future__ import annotations

from decimal import Decimal

from pipelines.html_page import bar_chart, esc, kpi_row, page, table, yuan
from pipelines.report import OUTCOME_LABELS

BREAKDOWN_TITLES = {"size_class": "企业规模", "industry_section": "行业门类", "division_code": "所属区划"}
BUDGET_RULE_TEXT = {"flag": "超出预算时暂停拨付、待人工放行（flag）", "pro_rata": "超出预算时按比例核减（pro_rata）"}


def conditions_html(r: dict) -> str:
    """Section 2: the top blocker, the per-item table and its charts."""
    b = r["blockers"]
    out = "<p>没有“差一项符合”的企业。</p>"
    if b["near_miss"]:
        nm = b["near_miss"]
        out = (f'<p id="top-blocker">最主要的卡点：<b>第 {nm["item"] + 1} 项（{esc(nm["text"])}）</b>，'
               f'有 {nm["count"]:,d} 家企业仅因此项未通过。</p>')
    if b["false"]:
        out += (f'<p>不满足企业最多的一项：第 {b["false"]["item"] + 1} 项（{esc(b["false"]["text"])}），'
                f'{b["false"]["count"]:,d} 家。</p>')
    rows = [[f"第 {c['item'] + 1} 项", c["text"], c["false"], c["unknown"], c["near_miss"], c["missing_data"]]
            for c in r["conditions"]]
    out += table(["条件", "内容", "不满足", "无法判断（数据缺失）", "仅此项未通过（差一项符合）",
                   "数据不全企业中此项无法判断"], rows, num_from=2, id_="conditions")
    for key, title in (("near_miss", "仅因此项未通过的企业数（差一项符合）"), ("false", "判定为不满足的企业数"),
                       ("unknown", "因数据缺失无法判断的企业数")):
        out += bar_chart(f"各项条件：{title}", [(f"第 {c['item'] + 1} 项", c[key]) for c in r["conditions"]], " 家")
    return out


def distribution_html(r: dict) -> str:
    """Section 3: eligible enterprises by size class, industry section and division."""
    out = ""
    for field, rows in r["distribution"].items():
        title = BREAKDOWN_TITLES[field]
        out += f"<h3>按{title}</h3>"
        if not rows:
            out += "<p>无符合条件的企业。</p>"
            continue
        out += table([title, "符合企业数", "预计金额（元）"],
                      [[d["label"], d["eligible"], yuan(d["amount"])] for d in rows], id_=f"dist-{field}")
        out += bar_chart(f"符合条件企业数（按{title}）", [(d["label"], d["eligible"]) for d in rows[:20]], " 家")
    return out


def budget_html(bud: dict) -> str:
    """Section 4: the demand against the budget."""
    if bud["budget"] is None:
        return f"<p>草案未设预算。测算金额 {yuan(bud['demand_amount'])} 元。</p>"
    verdict = (f"<b class='bad'>超出预算 {yuan(bud['gap'])} 元</b>" if bud["exceeds"]
               else f"<b class='good'>预算充足，尚余 {yuan(str(-Decimal(bud['gap'])))} 元</b>")
    factor = (f"；按比例核减系数 {esc(bud['pro_rata_factor'])}（预算 ÷ 测算金额，向下取至百万分之一；"
              f"实际核减由引擎逐笔向下取整到分）") if bud["pro_rata_factor"] else ""
    hold = "；按 flag 规则，该政策将暂停拨付，待人工放行" if bud["over_budget"] else ""
    rows = [["预算", yuan(bud["budget"])], ["测算金额（就高不重复后、预算规则前）", yuan(bud["demand_amount"])],
            ["按预算规则兑现金额", yuan(bud["total_amount"])]]
    return (table(["项目", "金额（元）"], rows, id_="budget")
            + f"<p>预算规则：{esc(BUDGET_RULE_TEXT.get(bud['budget_rule'], bud['budget_rule']))}。"
              f"预算使用率 {esc(bud['usage_percent'] or '—')}%，{verdict}{factor}{hold}。</p>"
            + bar_chart("测算金额与预算（元）", [("测算金额", Decimal(bud["demand_amount"])),
                                           ("预算", Decimal(bud["budget"]))]))


def overlap_html(ov: dict) -> str:
    """Section 5: the draft beside the in-force policies it touches."""
    if len(ov["policies"]) <= 1 and not ov["revises_in_force"]:
        return ("<p>草案未设置就高不重复分组（或分组中没有现行政策），且不是对现行政策的修订；"
                f"新增支出即草案金额 {yuan(ov['net_change'])} 元。</p>")
    group = f"就高不重复分组“{esc(ov['exclusive_group'])}”" if ov["exclusive_group"] else "同编号现行政策"
    out = f"<p>比较范围：{group}中的现行政策{'（草案替换同编号的现行版本）' if ov['revises_in_force'] else ''}。</p>"
    out += table(
        ["政策编号", "现行：符合企业数", "现行：金额（元）", "草案生效后：符合企业数", "草案生效后：金额（元）", "金额变化（元）"],
        [[p["policy_id"] + ("（草案）" if p["is_draft"] else ""), p["baseline_eligible"], yuan(p["baseline_amount"]),
          p["scenario_eligible"], yuan(p["scenario_amount"]), yuan(p["change_amount"])] for p in ov["policies"]],
        id_="overlap")
    if ov["both_eligible"]:
        out += table(["政策编号", "与草案同时符合的企业数"], [[x["policy_id"], x["enterprises"]] for x in ov["both_eligible"]])
    if ov["switch_to_draft"]:
        out += table(["原享受政策", "转为享受草案的企业数", "原金额（元）", "改按草案金额（元）"],
                      [[s["from_policy"], s["enterprises"], yuan(s["from_amount"]), yuan(s["to_amount"])]
                       for s in ov["switch_to_draft"]], id_="switch")
    else:
        out += "<p>没有企业从现行政策转为享受草案。</p>"
    return out + (f'<p>新增受益企业 {ov["new_recipients"]:,d} 家；不再受益企业 {ov["no_longer_paid"]:,d} 家。'
                  f'比较范围内支出：现行 {yuan(ov["baseline_amount"])} 元 → 草案生效后 {yuan(ov["scenario_amount"])} 元，'
                  f'净变化 <b id="net-change">{yuan(ov["net_change"])}</b> 元。</p>')


def sensitivity_html(entries: list[dict]) -> str:
    """Section 6: one table and one chart per threshold."""
    if not entries:
        return "<p>草案条件中没有数值阈值。</p>"
    out = ""
    for s in entries:
        base = s["base"]
        rows = [_sens_row(v) for v in s["variants"][:2]]
        rows.append(["0%", s["value"], base["eligible"], yuan(base["demand_amount"]), yuan(base["total_amount"]), "—", "—"])
        rows += [_sens_row(v) for v in s["variants"][2:]]
        out += f"<h3>{esc(s['label'])}（现值 {esc(s['value'])}）</h3>"
        out += table(["变动", "阈值", "符合企业数", "测算金额（元）", "按预算规则金额（元）", "企业数变化", "金额变化（元）"],
                      rows, num_from=2)
        out += bar_chart(f"符合企业数随阈值变化：{s['label']}",
                         [(f"{row[0]}（{row[1]}）", row[2] if isinstance(row[2], int) else 0) for row in rows], " 家")
    return out


def render(r: dict) -> str:
    """The sandbox page (Chinese, self-contained, inline SVG)."""
    forced = (f'<p class="warn">草案有效期为 {esc(r["valid_from"])} 至 {esc(r["valid_to"])}，不含模拟日期 '
              f'{esc(r["as_of"])}；本次模拟按已生效计算。</p>') if r["forced_in_force"] else ""
    md = r["missing_data_detail"]
    outcomes = table(["结果", "企业数"], [[OUTCOME_LABELS.get(o, o), n] for o, n in r["outcomes"].items()], id_="outcomes")
    kpis = kpi_row([
        ("符合条件企业", "kpi-eligible", f"{r['eligible']:,d}"),
        ("预计兑现金额（元）", "kpi-amount", yuan(r["total_amount"])),
        ("差一项符合", "kpi-near-miss", f"{r['near_miss']:,d}"),
        ("数据不全", "kpi-missing", f"{r['missing_data']:,d}"),
    ])
    body = f"""<h1>政策沙盘模拟：{esc(r['policy_id'])} {esc(r['policy_name'])}</h1>
<p>执行部门：{esc(r['department'])}　期次：{esc(r['period'])}　画像日期：<b id="as-of">{esc(r['as_of'])}</b>　画像企业数：{r['enterprises']:,d}</p>
<p class="warn">本页为模拟测算，不写入兑现台账，不生成任何名单；测算使用与夜间运行相同的匹配引擎，并计入就高不重复与预算规则。</p>
{forced}
{kpis}
<h2>一、匹配结果</h2>
{outcomes}
<p>数据不全 {r['missing_data']:,d} 家，其中条件因数据缺失无法判断 {md['conditions_unknown']:,d} 家、奖补计算基数缺失 {md['benefit_base_missing']:,d} 家。</p>
<h2>二、各项条件的影响</h2>
{conditions_html(r)}
<h2>三、符合条件企业分布</h2>
{distribution_html(r)}
<h2>四、预算测算</h2>
{budget_html(r["budget"])}
<h2>五、与现行政策的重叠（就高不重复）</h2>
{overlap_html(r["overlap"])}
<h2>六、阈值敏感性分析</h2>
<p>每次只调整一个数值阈值（±10%、±20%），其余条件不变，重新匹配。</p>
{sensitivity_html(r["sensitivity"])}"""
    return page(f"政策沙盘模拟 {r['policy_id']} {r['as_of']}", body, "本页由免申即享数据流水线政策沙盘生成，不含企业联系电话及个人姓名。")


def _sens_row(v: dict) -> list:
    if v.get("value") is None:
        return [v["change"], "—", v.get("note", "—"), "—", "—", "—", "—"]
    return [v["change"], v["value"], v["eligible"], yuan(v["demand_amount"]), yuan(v["total_amount"]),
            f"{v['delta_eligible']:+,d}", f"{Decimal(v['delta_amount']):+,.2f}"]
