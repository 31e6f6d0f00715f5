"""The two published lists (the "2" of 1+2+3+N, lifecycle.md item 7): 惠企政策清单
and 办事指南清单, as workbooks and as one static HTML page, in
`Settings.lists_dir(as_of)` (output/<as_of>/lists/), with a change log against the previous publication.

A publication is the policy library as it reads on a date. Its manifest
(manifest.json) keeps each policy's file hash and status; tonight's content
is compared with the newest earlier manifest: a new id is 新增, a policy that
became 已废止 is 废止, one that became 已失效 (or whose file left the library)
is 失效, any other change of its file is 修改. When nothing changed, tonight
republishes that publication as it was (same 发布日期, same change log), so a
reader always sees what changed since the publication before.

Policies that left force stay listed, with their status and its date.
"""
from __future__ import annotations

import hashlib
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from pipelines.config import Settings
from pipelines.evidence import UNITS, decimal_text, label
from pipelines.files import atomic_write_text, read_json
from pipelines.html_page import esc, page
from pipelines.outputs.workbook import Col, cn_date, write_workbook
from pipelines.policies import Policy, PolicyError

MANIFEST = "manifest.json"
POLICY_LIST, GUIDE_LIST, CHANGE_LOG, PAGE = "惠企政策清单.xlsx", "办事指南清单.xlsx", "清单变更记录.xlsx", "惠企政策清单.html"
KIND_LABELS = {"condition": "条件类", "name_list": "名单类", "manual": "暂时难以数据化类"}
ADDED, CHANGED, EXPIRED, REPEALED = "新增", "修改", "失效", "废止"
GUIDE_KEYS = (("summary", "政策概要"), ("time_limit", "办理时限"), ("process", "办理流程"), ("contact", "咨询方式"))

POLICY_COLUMNS = (
    Col("序号", "seq", "int"),
    Col("政策编号", "id"),
    Col("政策名称", "name", wrap=True, max_width=30),
    Col("政策类别", "kind"),
    Col("执行部门", "department", wrap=True, max_width=24),
    Col("政策依据", "basis", wrap=True, max_width=24),
    Col("有效期", "validity", wrap=True, max_width=30),
    Col("兑现方式及标准", "benefit", wrap=True, max_width=50),
    Col("资金预算", "budget"),
    Col("状态", "status"),
    Col("状态说明", "status_note", wrap=True, max_width=30),
)
GUIDE_COLUMNS = (
    Col("序号", "seq", "int"),
    Col("政策编号", "id"),
    Col("政策名称", "name", wrap=True, max_width=30),
    Col("执行部门", "department", wrap=True, max_width=24),
    *(Col(title, key, wrap=True, max_width=50) for key, title in GUIDE_KEYS),
    Col("状态", "status"),
)
CHANGE_COLUMNS = (
    Col("序号", "seq", "int"),
    Col("变更类型", "change"),
    Col("政策编号", "id"),
    Col("政策名称", "name", wrap=True, max_width=30),
    Col("说明", "note", wrap=True, max_width=60),
)


# ---------------------------------------------------------------- how a policy reads

def yuan(amount: Decimal) -> str:
    return f"{amount:,.2f} 元"


def benefit_text(policy: Policy) -> str:
    b = policy.benefit
    if policy.kind == "manual" or b is None:
        return "人工核定：由企业在线申报，部门审核后兑现"
    if b.type == "fixed":
        return f"定额奖补 {yuan(b.amount)}"
    if b.type == "from_list":
        return "按部门认定名单所列金额兑现"
    base = label(b.base)
    if b.type == "tiered":
        unit = UNITS.get(b.base, "")
        return f"按{base}分档：" + "；".join(f"达到 {t.min.normalize():,f}{unit} 的 {yuan(t.amount)}" for t in b.tiers)
    if b.type == "per_head":
        text = f"按{base}每人 {yuan(b.amount_each)}"
    elif UNITS.get(b.base) == "万元":
        text = f"按{base}每万元 {yuan(b.rate)}"
    else:
        text = f"按{base}的 {decimal_text(b.rate * 100)}%"
    if getattr(b, "min", None) is not None:
        text += f"，最低 {yuan(b.min)}"
    if b.cap is not None:
        text += f"，单户最高 {yuan(b.cap)}"
    return text


def status_note(policy: Policy, as_of: date) -> str:
    status = policy.status_on(as_of)
    if status == "已废止":
        return f"自{cn_date(policy.repealed_on)}起废止"
    if status == "未生效":
        return f"自{cn_date(policy.valid_from)}起施行"
    if status == "已失效":
        return f"{cn_date(policy.valid_to)}有效期届满"
    if policy.repealed_on is not None:
        return f"将于{cn_date(policy.repealed_on)}起废止"
    return f"有效期至{cn_date(policy.valid_to)}"


def entry(policy: Policy, as_of: date) -> dict:
    guide = policy.guide_dict
    return {
        "id": policy.id, "name": policy.name, "kind": KIND_LABELS.get(policy.kind, policy.kind),
        "department": policy.department, "basis": policy.basis or "—",
        "validity": f"{cn_date(policy.valid_from)}至{cn_date(policy.valid_to)}",
        "benefit": benefit_text(policy), "budget": yuan(policy.budget) if policy.budget is not None else "—",
        "status": policy.status_on(as_of), "status_note": status_note(policy, as_of),
        **{key: guide.get(key) or "—" for key, _ in GUIDE_KEYS},
        "file": Path(policy.file).name, "sha256": policy.file_hash,
    }


# ---------------------------------------------------------------- what changed

def changes(previous: dict[str, dict], current: dict[str, dict]) -> list[dict]:
    """The change log of `current` against `previous` (policy id -> entry with sha256 and status)."""
    out = []
    for pid in sorted(set(previous) | set(current)):
        before, now = previous.get(pid), current.get(pid)
        if before is None:
            out.append({"change": ADDED, "id": pid, "name": now["name"], "note": f"新纳入清单，状态：{now['status']}"})
        elif now is None:
            out.append({"change": EXPIRED, "id": pid, "name": before["name"], "note": "政策文件已移出政策库，不再执行"})
        elif now["status"] == "已废止" and before["status"] != "已废止":
            out.append({"change": REPEALED, "id": pid, "name": now["name"], "note": now["status_note"]})
        elif now["status"] == "已失效" and before["status"] != "已失效":
            out.append({"change": EXPIRED, "id": pid, "name": now["name"], "note": now["status_note"]})
        elif now["sha256"] != before["sha256"]:
            fields = [title for key, title in (("benefit", "兑现方式及标准"), ("budget", "资金预算"),
                                              ("validity", "有效期"), ("basis", "政策依据"), ("name", "政策名称"),
                                              ("department", "执行部门"), *GUIDE_KEYS)
                      if before.get(key) != now.get(key)]
            note = "修改了：" + "、".join(fields) if fields else "政策文件内容（适用条件等）有修改"
            out.append({"change": CHANGED, "id": pid, "name": now["name"], "note": note})
    return out


def previous_manifest(settings: Settings, as_of: date) -> dict | None:
    """The newest publication before as_of."""
    if not settings.output.is_dir():
        return None
    for name in sorted((p.name for p in settings.output.iterdir() if p.is_dir() and p.name < as_of.isoformat()),
                       reverse=True):
        found = read_json(settings.lists_dir(name) / MANIFEST)
        if found:
            return found
    return None


def _fingerprint(current: dict[str, dict]) -> str:
    return hashlib.sha256(json.dumps(current, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def publication(policies: list[Policy], as_of: date, previous: dict | None, unreadable: set[str] = frozenset()) -> dict:
    """Tonight's manifest: the entries, the 发布日期 and the change log (kept when nothing changed).

    `unreadable`: names of policy files the checker refuses tonight; a policy whose
    file is among them keeps its previous entry (a typo is not a 失效)."""
    current = {p.id: entry(p, as_of) for p in policies}
    for pid, before in ((previous or {}).get("policies") or {}).items():
        if pid not in current and before.get("file") in unreadable:
            current[pid] = before
    current = dict(sorted(current.items()))
    fingerprint = _fingerprint(current)
    if previous and previous.get("fingerprint") == fingerprint:
        return previous
    before = (previous or {}).get("policies", {})
    return {"published_on": as_of.isoformat(), "fingerprint": fingerprint,
            "previous_published_on": (previous or {}).get("published_on"),
            "changes": changes(before, current) if previous else [], "policies": current}


# ---------------------------------------------------------------- writing

PAGE_STYLE = """body{margin:1em;max-width:60em} .card{border:1px solid #ccc;border-radius:6px;padding:.6em .9em;margin:.8em 0}
.card h3{margin:.1em 0 .4em;font-size:1.1em} dl{margin:0;display:grid;grid-template-columns:6.5em 1fr;gap:.25em .6em}
dt{color:#555} dd{margin:0;overflow-wrap:anywhere} .status{display:inline-block;padding:0 .5em;border-radius:.8em;font-size:.85em;color:#fff;background:#2e7d32}
.status.off{background:#757575} .status.todo{background:#1565c0} ul.changes li{margin:.3em 0} nav a{margin-right:1em}"""
STATUS_CLASS = {"生效": "", "未生效": "todo", "已失效": "off", "已废止": "off"}


def _card(e: dict, fields: list[tuple[str, str]]) -> str:
    rows = "".join(f"<dt>{esc(title)}</dt><dd>{esc(str(e[key]))}</dd>" for key, title in fields)
    return (f'<section class="card" id="{esc(e["id"])}"><h3>{esc(e["name"])} '
            f'<span class="status {STATUS_CLASS.get(e["status"], "")}">{esc(e["status"])}</span></h3>'
            f"<dl>{rows}</dl></section>")


def render(manifest: dict, unit: str) -> str:
    entries = list(manifest["policies"].values())
    published = date.fromisoformat(manifest["published_on"])
    log = manifest["changes"]
    since = manifest.get("previous_published_on")
    if since is None:
        change_html = "<p>本期为首次发布。</p>"
    elif not log:
        change_html = f"<p>与上一期（{esc(since)}）相比无变化。</p>"
    else:
        change_html = (f"<p>与上一期（{esc(since)}）相比：</p><ul class=\"changes\" id=\"changes\">"
                       + "".join(f"<li><b>{esc(c['change'])}</b> {esc(c['name'])}（{esc(c['id'])}）：{esc(c['note'])}</li>"
                                 for c in log) + "</ul>")
    policy_fields = [("id", "政策编号"), ("kind", "政策类别"), ("department", "执行部门"), ("basis", "政策依据"),
                     ("validity", "有效期"), ("benefit", "兑现标准"), ("budget", "资金预算"), ("status_note", "状态说明")]
    guide_fields = [("id", "政策编号"), ("department", "执行部门")] + [(k, t) for k, t in GUIDE_KEYS]
    in_force = sum(e["status"] == "生效" for e in entries)
    body = f"""<h1>卧龙区惠企政策清单</h1>
<p>发布单位：{esc(unit)}<br>发布日期：<b id="published-on">{cn_date(published)}</b><br>
共 <b id="policy-count">{len(entries)}</b> 项政策，其中生效 {in_force} 项。</p>
<nav><a href="#policies">惠企政策清单</a><a href="#guides">办事指南清单</a><a href="#changelog">变更记录</a></nav>
<h2 id="changelog">变更记录</h2>{change_html}
<h2 id="policies">一、惠企政策清单</h2>{''.join(_card(e, policy_fields) for e in entries)}
<h2 id="guides">二、办事指南清单</h2>{''.join(_card(e, guide_fields) for e in entries)}"""
    return page(f"卧龙区惠企政策清单（{cn_date(published)}发布）", body,
                "本清单由卧龙区惠企政策“免申即享”服务平台按政策文件自动生成；已失效、已废止的政策保留列示，供查询。",
                style=PAGE_STYLE)


def write(folder: Path, manifest: dict, unit: str) -> list[Path]:
    published = date.fromisoformat(manifest["published_on"])
    entries = [dict(e, seq=i) for i, e in enumerate(manifest["policies"].values(), start=1)]
    subtitle = f"发布单位：{unit}"
    paths = [
        write_workbook(folder / POLICY_LIST, "卧龙区惠企政策清单", POLICY_COLUMNS, entries, unit=unit,
                       made_on=published, date_label="发布日期", subtitle=subtitle, sheet="惠企政策清单", total=False),
        write_workbook(folder / GUIDE_LIST, "卧龙区惠企政策办事指南清单", GUIDE_COLUMNS, entries, unit=unit,
                       made_on=published, date_label="发布日期", subtitle=subtitle, sheet="办事指南清单", total=False),
        write_workbook(folder / CHANGE_LOG, "卧龙区惠企政策清单变更记录", CHANGE_COLUMNS,
                       [dict(c, seq=i) for i, c in enumerate(manifest["changes"], start=1)], unit=unit,
                       made_on=published, date_label="发布日期",
                       subtitle=f"对照上一期：{manifest.get('previous_published_on') or '无（首次发布）'}",
                       sheet="变更记录", total=False),
    ]
    atomic_write_text(folder / PAGE, render(manifest, unit))
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2))
    return paths + [folder / PAGE, folder / MANIFEST]


def publish(settings: Settings, as_of: date, policies: list[Policy], errors: list[PolicyError], unit: str) -> list[Path]:
    """Write tonight's publication into settings.lists_dir(as_of): `policies` and `errors` as
    `policies.load_dir` gives them (bad files are left out, as in matching)."""
    unreadable = {Path(e.file).name for e in errors if not e.warning}
    manifest = publication(policies, as_of, previous_manifest(settings, as_of), unreadable)
    return write(settings.lists_dir(as_of), manifest, unit)
