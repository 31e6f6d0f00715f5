"""The policy sandbox (政策沙盘): what a draft policy would do, before anyone puts it in force.

`simulate` checks a draft policy file with the policy checker, forces it in
force for the run date, and evaluates it against that date's portrait with the
nightly engine itself (`engine.evaluate`), together with the in-force policies
it would compete with in its exclusive group, so that its figures are the ones
the nightly run would write to matches.parquet. It writes nothing but its own
HTML page (`sandbox_page.render`, and returns a JSON-ready dict): no ledger, no lists.

What it reports (the page is in Chinese, for the policy officer):
- the headline: eligible count and total after exclusive groups and the budget
  rule, every outcome's count;
- per top-level condition item: how many enterprises it evaluates FALSE and
  UNKNOWN, how many near misses fail on it alone, how many missing-data results
  it leaves undecided;
- the eligible enterprises by size_class, industry_section and division_code;
- budget adequacy: the demand (amounts after groups, before the budget rule)
  against the budget, the pro-rata factor;
- overlap with the in-force policies of its exclusive group (and the in-force
  version of the same id, when the draft revises one): who would switch to the
  draft and the net cost change;
- sensitivity: for every numeric threshold in the conditions (scalar
  comparisons and both ends of `between`), count and cost at -20 %, -10 %,
  +10 %, +20 % of that one value.

Decisions:
- "Forced in force": valid_from/valid_to are widened to include as_of; the
  page says so when the file's own dates do not cover it.
- The draft's group peers are the in-force, non-manual policies with the same
  exclusive_group and period (the engine's grouping key); a policy file in
  settings.policies with the draft's id is replaced by the draft.
- The headline, the outcomes and the overlap come from `engine.evaluate` over
  the draft and the policies it touches, unchanged. Sensitivity (and the
  demand before the budget) takes the same steps with the engine's own parts
  so that the peers are evaluated once, not once per variant: the variant
  alone through `engine.evaluate` without its budget, `engine.apply_groups`
  with the peers' results, then `engine.apply_budget`. Groups are decided on
  amounts before budgets, so this is what `evaluate` does (a test checks the
  unchanged draft gives the headline, and a variant equals the simulation of
  the edited draft).
- A threshold's scaled value is exact (Decimal); only beyond 18 fractional
  digits is it rounded half-even to the comparison type's scale. On an integer
  field a non-integer threshold stays as it is (ge 2.7 on a count is ge 3).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import sys
from collections import Counter, defaultdict
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from functools import reduce
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import contracts, engine, evidence, match
from pipelines import policies as policy_lib
from pipelines.config import Settings
from pipelines.policies import FIELD_KINDS, NUMERIC_KINDS, OP_LABELS, SCALAR_OPS, Leaf, Node, Policy, PolicyError
from pipelines.files import atomic_write_text
from pipelines.html_page import yuan
from pipelines.sandbox_page import render

CENT = Decimal("0.01")
CHANGES = (Decimal("-0.2"), Decimal("-0.1"), Decimal("0.1"), Decimal("0.2"))
DRAFT_LABEL = "<草案文本>"
BREAKDOWNS = ("size_class", "industry_section", "division_code")
MAX_THRESHOLD = Decimal(10) ** 20          # what a comparison in decimal128(38, 18) holds
SCALE_QUANTUM = Decimal(1).scaleb(-policy_lib.MAX_SCALE)
ALL_OUTCOMES = engine.STORED               # the stored outcomes, in the engine's order
SECTION_NAMES = {
    "A": "农、林、牧、渔业", "B": "采矿业", "C": "制造业", "D": "电力、热力、燃气及水生产和供应业",
    "E": "建筑业", "F": "批发和零售业", "G": "交通运输、仓储和邮政业", "H": "住宿和餐饮业",
    "I": "信息传输、软件和信息技术服务业", "J": "金融业", "K": "房地产业", "L": "租赁和商务服务业",
    "M": "科学研究和技术服务业", "N": "水利、环境和公共设施管理业", "O": "居民服务、修理和其他服务业",
    "P": "教育", "Q": "卫生和社会工作", "R": "文化、体育和娱乐业", "S": "公共管理、社会保障和社会组织",
    "T": "国际组织",
}


class DraftError(Exception):
    """The draft is not a valid policy: the checker's errors (Chinese), one per problem."""

    def __init__(self, errors: list[PolicyError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class SandboxError(Exception):
    """The simulation cannot run (no portrait, the engine refused the draft): a Chinese message."""


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One numeric threshold of the conditions: a scalar comparison, or one end of a `between`."""

    path: str
    field: str
    op: str
    end: str | None          # None, "lo" or "hi" (between)
    value: Decimal


# ---------------------------------------------------------------- the draft

def read_draft(draft: str | Path) -> tuple[str, str]:
    """(YAML text, file label): `draft` is a path to a YAML file, or the YAML text itself.

    A str with a line break (or a flow mapping `{...}`) is text; anything else is a path.
    """
    if isinstance(draft, str) and ("\n" in draft or draft.lstrip().startswith("{")):
        return draft, DRAFT_LABEL
    path = Path(draft)
    if not path.is_file():
        raise DraftError([PolicyError(str(path), 0, "", "草案文件不存在")])
    try:
        return path.read_bytes().decode("utf-8-sig"), str(path)
    except UnicodeDecodeError:
        raise DraftError([PolicyError(str(path), 1, "", "文件不是 UTF-8 编码")]) from None


def load_draft(draft: str | Path) -> Policy:
    """The checked draft policy, or DraftError with every problem the checker found."""
    text, label = read_draft(draft)
    policy, errors = policy_lib.load_text(text, label, hashlib.sha256(text.encode("utf-8")).hexdigest())
    if errors or policy is None:
        raise DraftError(errors or [PolicyError(label, 1, "", "无法读取政策草案")])
    return policy


def force_in_force(policy: Policy, as_of: dt.date) -> Policy:
    """The policy with its validity widened to include as_of (the sandbox runs it whatever its dates)."""
    return dataclasses.replace(policy, valid_from=min(policy.valid_from, as_of), valid_to=max(policy.valid_to, as_of),
                               repealed_on=None)


def portrait_path(settings: Settings, as_of: dt.date | None) -> tuple[dt.date, Path]:
    """(as_of, the portrait file): the given date's, or the newest when as_of is None."""
    if as_of is None:
        dates = settings.portrait_dates()
        if not dates:
            raise SandboxError(f"未找到企业画像（{settings.portraits}），请先运行夜间流水线。")
        as_of = dates[-1]
    path = settings.portrait_path(as_of)
    if not path.exists():
        raise SandboxError(f"未找到 {as_of} 的企业画像（{path}）。")
    return as_of, path


# ---------------------------------------------------------------- who competes with the draft

def group_peers(loaded: list[Policy], policy: Policy, as_of: dt.date) -> list[Policy]:
    """In-force policies sharing the policy's exclusive group and period (the engine's grouping key)."""
    if policy.kind == "manual" or not policy.exclusive_group:
        return []
    return [p for p in policy_lib.in_force(loaded, as_of)
            if p.id != policy.id and p.kind != "manual"
            and p.exclusive_group == policy.exclusive_group and p.period == policy.period]


def current_version(loaded: list[Policy], policy_id: str, as_of: dt.date) -> Policy | None:
    """The in-force policy with the draft's id (the draft revises it), if any."""
    return next((p for p in policy_lib.in_force(loaded, as_of) if p.id == policy_id), None)


def comparison_sets(loaded: list[Policy], draft: Policy, as_of: dt.date) -> tuple[list[Policy], list[Policy]]:
    """(baseline, scenario): the in-force policies the draft touches, without and with the draft."""
    current = current_version(loaded, draft.id, as_of)
    baseline: dict[str, Policy] = {p.id: p for p in group_peers(loaded, draft, as_of)}
    if current is not None:
        baseline[current.id] = current
        baseline.update({p.id: p for p in group_peers(loaded, current, as_of)})
    scenario = {pid: p for pid, p in baseline.items() if pid != draft.id}
    scenario[draft.id] = draft
    return sorted(baseline.values(), key=lambda p: p.id), sorted(scenario.values(), key=lambda p: p.id)


# ---------------------------------------------------------------- the engine, and figures from its rows

def run_engine(portrait: pa.Table, policies: list[Policy], as_of: dt.date,
               name_lists: dict[str, pa.Table], must_run: str) -> pa.Table:
    """engine.evaluate; SandboxError when the policy `must_run` failed at run time."""
    errors: list[PolicyError] = []
    table = engine.evaluate(portrait, policies, as_of, name_lists, errors=errors)
    for e in errors:
        if e.key == must_run:
            raise SandboxError(f"政策草案 {must_run} 运行出错：{e.message}")
    return table


def rows_of(table: pa.Table, policy_id: str) -> pa.Table:
    return table.filter(pc.equal(table.column("policy_id"), pa.scalar(policy_id)))


def outcome_counts(rows: pa.Table) -> dict[str, int]:
    counts = Counter(rows.column("outcome").to_pylist())
    return {o: counts.get(o, 0) for o in ALL_OUTCOMES}


def eligible_mask(rows: pa.Table) -> pa.Array:
    return pc.equal(rows.column("outcome"), pa.scalar("eligible"))


def eligible_total(rows: pa.Table) -> Decimal:
    """The eligible amounts' sum, exact, to the 分."""
    if rows.num_rows == 0:
        return Decimal("0.00")
    total = pc.sum(rows.filter(eligible_mask(rows)).column("amount")).as_py()
    return (total or Decimal(0)).quantize(CENT)


def money(d: Decimal) -> str:
    return str(d.quantize(CENT))


def unbudgeted(policy: Policy) -> Policy:
    return dataclasses.replace(policy, budget=None)


# What exclusive groups and budgets read of a result (engine.apply_groups / engine.apply_budget).
CORE_COLUMNS = ["uscc", "exclusive_group", "period", "amount", "policy_id", "outcome", "excluded_by", "over_budget"]


def peer_results(portrait: pa.Table, peers: list[Policy], as_of: dt.date,
                 name_lists: dict[str, pa.Table]) -> pa.Table:
    """The peers' results before groups and budgets (core columns), computed once for every variant.

    Each peer alone through engine.evaluate: with one policy, groups change nothing, and without its
    budget nothing is scaled or flagged. A peer that fails at run time is left out, as the nightly run does.
    Only eligible results take part in groups, so only those are kept.
    """
    parts = []
    for p in peers:
        part = engine.evaluate(portrait, [unbudgeted(p)], as_of, name_lists).select(CORE_COLUMNS)
        parts.append(part.filter(eligible_mask(part)))
    return pa.concat_tables(parts) if parts else engine.RESULT_SCHEMA.empty_table().select(CORE_COLUMNS)


def figures(portrait: pa.Table, policy: Policy, peers: pa.Table, as_of: dt.date,
            name_lists: dict[str, pa.Table]) -> dict:
    """Eligible count, demand (after groups, before the budget) and total (after the budget rule).

    The same steps as engine.evaluate: the policy's results, then engine.apply_groups with the peers'
    results, then engine.apply_budget; groups are decided on amounts before budgets, so the peers'
    own budgets do not matter here.
    """
    own = run_engine(portrait, [unbudgeted(policy)], as_of, name_lists, policy.id).select(CORE_COLUMNS)
    grouped = engine.apply_groups(pa.concat_tables([own, peers])) if peers.num_rows else own
    rows = grouped.slice(0, own.num_rows)
    budgeted = engine.apply_budget(rows, policy)
    return {
        "eligible": int(pc.sum(eligible_mask(rows).cast(pa.int64())).as_py() or 0),
        "demand_amount": money(eligible_total(rows)),
        "total_amount": money(eligible_total(budgeted)),
    }


# ---------------------------------------------------------------- conditions

def value_text(v, kind: str) -> str:
    if v is None:
        return "不限"
    if isinstance(v, bool):
        return "是" if v else "否"
    if isinstance(v, Decimal):
        return evidence.decimal_text(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def node_text(node: Node) -> str:
    """A condition item as a policy officer reads it."""
    if isinstance(node, Leaf):
        kind = FIELD_KINDS[node.field]
        label = contracts.FIELD_LABELS.get(node.field, node.field)
        if node.value is None:
            return f"{label}{OP_LABELS[node.op]}"
        if node.op == "between":
            lo, hi = node.value
            return f"{label}介于 {value_text(lo, kind)} 至 {value_text(hi, kind)}"
        if isinstance(node.value, tuple):
            return f"{label}{OP_LABELS[node.op]} {'、'.join(value_text(v, kind) for v in node.value)}"
        return f"{label}{OP_LABELS[node.op]} {value_text(node.value, kind)}"
    head = {"all": "同时满足", "any": "满足其一", "none": "均不满足"}[node.op]
    return f"{head}（{'；'.join(node_text(i) for i in node.items)}）"


def item_results(portrait: pa.Table, policy: Policy, name_lists: dict[str, pa.Table]) -> list[pa.Array]:
    """Each top-level condition item's TRUE/FALSE/UNKNOWN over the policy's population (the engine's kernels)."""
    table, _ = engine._population(engine.with_registered(portrait), policy, name_lists)
    cols = engine.Columns(table)
    return [engine.node_result(cols, node, {}) for node in policy.conditions]


def _count(mask: pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def condition_breakdown(policy: Policy, items: list[pa.Array], rows: pa.Table) -> list[dict]:
    """Per top-level item: FALSE, UNKNOWN, near misses failing on it alone, missing-data results it leaves open."""
    near = Counter(r for r, o in zip(rows.column("failed_item").to_pylist(), rows.column("outcome").to_pylist())
                   if o == "near_miss")
    cond_unknown = pc.is_null(reduce(pc.and_kleene, items)) if items else None
    out = []
    for k, (node, res) in enumerate(zip(policy.conditions, items)):
        out.append({
            "item": k,
            "text": node_text(node),
            "false": _count(pc.invert(res)),
            "unknown": res.null_count,
            "near_miss": near.get(k, 0),
            "missing_data": _count(pc.and_(cond_unknown, pc.is_null(res))),
        })
    return out


def blockers(conditions: list[dict]) -> dict:
    """The single item that keeps most enterprises out: by near misses, and by FALSE results."""
    def top(key):
        best = max(conditions, key=lambda c: (c[key], -c["item"]), default=None)
        return None if best is None or best[key] == 0 else {"item": best["item"], "text": best["text"], "count": best[key]}
    return {"near_miss": top("near_miss"), "false": top("false")}


# ---------------------------------------------------------------- distribution and budget

def distribution(rows: pa.Table, portrait: pa.Table, field: str) -> list[dict]:
    """Eligible enterprises and their amounts by a portrait field (empty values as "（空）")."""
    eligible = rows.filter(eligible_mask(rows))
    idx = pc.index_in(eligible.column("uscc"), value_set=portrait.column("uscc"))
    keys = portrait.column(field).take(idx).to_pylist() if eligible.num_rows else []
    counts: Counter = Counter()
    amounts: dict = defaultdict(lambda: Decimal(0))
    for key, amount in zip(keys, eligible.column("amount").to_pylist()):
        key = "（空）" if key is None else key
        counts[key] += 1
        amounts[key] += amount or Decimal(0)
    return [{"key": k, "label": _key_label(field, k), "eligible": n, "amount": money(amounts[k])}
            for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _key_label(field: str, key: str) -> str:
    if field == "industry_section" and key in SECTION_NAMES:
        return f"{key} {SECTION_NAMES[key]}"
    return key


def budget_adequacy(policy: Policy, demand: Decimal, total: Decimal, over_budget: bool) -> dict:
    """The demand against the budget: usage, the gap, and the pro-rata factor (budget / demand, floored)."""
    out = {"budget": None, "budget_rule": None, "demand_amount": money(demand), "total_amount": money(total),
           "exceeds": False, "usage_percent": None, "gap": None, "pro_rata_factor": None,
           "over_budget": over_budget}
    if policy.budget is None or policy.kind == "manual":
        return out
    budget = policy.budget
    exceeds = demand > budget
    with localcontext() as ctx:
        ctx.prec = 60
        usage = (demand * 100 / budget).quantize(CENT, ROUND_HALF_UP) if budget else None
        factor = (budget / demand).quantize(Decimal("0.000001"), ROUND_FLOOR) if exceeds else None
    out.update({"budget": money(budget), "budget_rule": policy.budget_rule, "exceeds": exceeds,
                "usage_percent": None if usage is None else str(usage),
                "gap": money(demand - budget), "pro_rata_factor": None if factor is None else str(factor)})
    return out


# ---------------------------------------------------------------- overlap

def _received(table: pa.Table) -> dict[tuple[str, str], Decimal]:
    """(policy_id, uscc) -> amount of every eligible result (after groups and budgets)."""
    el = table.filter(eligible_mask(table)) if table.num_rows else table
    return {(p, u): a or Decimal(0) for p, u, a in zip(el.column("policy_id").to_pylist(), el.column("uscc").to_pylist(),
                                                       el.column("amount").to_pylist())}


def overlap(draft: Policy, baseline_set: list[Policy], baseline: pa.Table, scenario: pa.Table) -> dict:
    """What the draft changes among the in-force policies it touches: per policy before/after,
    who switches to the draft (from which peer), and the net cost change."""
    before, after = _received(baseline), _received(scenario)
    ids = sorted({p.id for p in baseline_set} | {draft.id})
    per_policy = []
    for pid in ids:
        b = [a for (p, _), a in before.items() if p == pid]
        s = [a for (p, _), a in after.items() if p == pid]
        per_policy.append({
            "policy_id": pid, "is_draft": pid == draft.id,
            "baseline_eligible": len(b), "baseline_amount": money(sum(b, Decimal(0))),
            "scenario_eligible": len(s), "scenario_amount": money(sum(s, Decimal(0))),
            "change_amount": money(sum(s, Decimal(0)) - sum(b, Decimal(0))),
        })
    # Who switches: received a peer's benefit before, and now that peer's result is excluded by the draft.
    lost_to_draft = scenario.filter(pc.and_(pc.equal(scenario.column("outcome"), pa.scalar("excluded_by_group")),
                                            pc.equal(scenario.column("excluded_by"), pa.scalar(draft.id)))) \
        if scenario.num_rows else scenario
    switches: dict[str, dict] = {}
    for pid, uscc in zip(lost_to_draft.column("policy_id").to_pylist(), lost_to_draft.column("uscc").to_pylist()):
        if (pid, uscc) not in before:
            continue
        s = switches.setdefault(pid, {"from_policy": pid, "enterprises": 0, "from_amount": Decimal(0),
                                      "to_amount": Decimal(0)})
        s["enterprises"] += 1
        s["from_amount"] += before[(pid, uscc)]
        s["to_amount"] += after.get((draft.id, uscc), Decimal(0))
    # Enterprises both the draft and a peer would pay before 就高不重复.
    both = Counter()
    if scenario.num_rows:
        cand = scenario.filter(pc.is_in(scenario.column("outcome"), value_set=pa.array(["eligible", "excluded_by_group"])))
        by_uscc: dict[str, set] = defaultdict(set)
        for pid, uscc in zip(cand.column("policy_id").to_pylist(), cand.column("uscc").to_pylist()):
            by_uscc[uscc].add(pid)
        for pids in by_uscc.values():
            if draft.id in pids:
                for pid in pids - {draft.id}:
                    both[pid] += 1
    draft_before = {u for (p, u) in before if p == draft.id}
    group_before = {u for (p, u) in before}
    draft_after = {u for (p, u) in after if p == draft.id}
    net = sum(after.values(), Decimal(0)) - sum(before.values(), Decimal(0))
    return {
        "exclusive_group": draft.exclusive_group,
        "revises_in_force": any(p.id == draft.id for p in baseline_set),
        "policies": per_policy,
        "both_eligible": [{"policy_id": pid, "enterprises": n} for pid, n in sorted(both.items())],
        "switch_to_draft": [{**s, "from_amount": money(s["from_amount"]), "to_amount": money(s["to_amount"])}
                            for _, s in sorted(switches.items())],
        "new_recipients": len(draft_after - group_before),
        "kept_draft": len(draft_after & draft_before),
        "no_longer_paid": len((group_before - {u for (_, u) in after})),
        "baseline_amount": money(sum(before.values(), Decimal(0))),
        "scenario_amount": money(sum(after.values(), Decimal(0))),
        "net_change": money(net),
    }


# ---------------------------------------------------------------- sensitivity

def thresholds(policy: Policy) -> list[Threshold]:
    """Every numeric threshold of the conditions: scalar comparisons and both ends of `between`."""
    out = []
    for leaf in policy.leaves():
        if FIELD_KINDS[leaf.field] not in NUMERIC_KINDS:
            continue
        if leaf.op in SCALAR_OPS and leaf.value is not None:
            out.append(Threshold(leaf.path, leaf.field, leaf.op, None, Decimal(leaf.value)))
        elif leaf.op == "between":
            for end, v in zip(("lo", "hi"), leaf.value):
                if v is not None:
                    out.append(Threshold(leaf.path, leaf.field, leaf.op, end, Decimal(v)))
    return out


def scaled(value: Decimal, change: Decimal) -> Decimal | None:
    """value x (1 + change), exact; rounded only beyond 18 fractional digits; None when out of range."""
    with localcontext() as ctx:
        ctx.prec = 80
        out = value * (1 + change)
        if out.as_tuple().exponent < -policy_lib.MAX_SCALE:   # type: ignore[operator]
            out = out.quantize(SCALE_QUANTUM, ROUND_HALF_EVEN)
    return None if abs(out) >= MAX_THRESHOLD else out


def _replace_leaf(node: Node, path: str, fn) -> Node:
    if isinstance(node, Leaf):
        return fn(node) if node.path == path else node
    return dataclasses.replace(node, items=tuple(_replace_leaf(i, path, fn) for i in node.items))


def with_threshold(policy: Policy, th: Threshold, value: Decimal) -> Policy:
    """The policy with one threshold changed (nothing else)."""
    def change(leaf: Leaf) -> Leaf:
        if th.end is None:
            return dataclasses.replace(leaf, value=value)
        lo, hi = leaf.value
        return dataclasses.replace(leaf, value=(value, hi) if th.end == "lo" else (lo, value))
    return dataclasses.replace(policy, conditions=tuple(_replace_leaf(n, th.path, change) for n in policy.conditions))


def threshold_label(th: Threshold) -> str:
    label = contracts.FIELD_LABELS.get(th.field, th.field)
    end = {"lo": "（下限）", "hi": "（上限）"}.get(th.end or "", "")
    return f"{label} {OP_LABELS[th.op]}{end}"


def pct_text(change: Decimal) -> str:
    return f"{int(change * 100):+d}%"


def sensitivity(portrait: pa.Table, policy: Policy, peers: pa.Table, as_of: dt.date,
                name_lists: dict[str, pa.Table], base: dict) -> list[dict]:
    """Count and cost at -20/-10/+10/+20 % of each numeric threshold, one threshold at a time."""
    out = []
    for th in thresholds(policy):
        variants = []
        for change in CHANGES:
            value = scaled(th.value, change)
            if value is None:
                variants.append({"change": pct_text(change), "value": None, "note": "超出可比较范围，未测算"})
                continue
            fig = figures(portrait, with_threshold(policy, th, value), peers, as_of, name_lists)
            variants.append({
                "change": pct_text(change), "value": evidence.decimal_text(value), **fig,
                "delta_eligible": fig["eligible"] - base["eligible"],
                "delta_amount": money(Decimal(fig["total_amount"]) - Decimal(base["total_amount"])),
            })
        out.append({"path": th.path, "field": th.field, "op": th.op, "end": th.end,
                    "label": threshold_label(th), "value": evidence.decimal_text(th.value),
                    "base": base, "variants": variants})
    return out


# ---------------------------------------------------------------- simulate

def simulate(settings: Settings, draft_path: str | Path, as_of: dt.date | None = None) -> dict:
    """Evaluate a draft policy against the portrait of as_of (newest when None); write the HTML page.

    Raises DraftError when the draft is not a valid policy, SandboxError when it cannot run.
    Returns a JSON-ready dict (amounts as strings with two decimals); `html` is the page's path.
    """
    draft_file = load_draft(draft_path)
    as_of, path = portrait_path(settings, as_of)
    draft = force_in_force(draft_file, as_of)
    portrait = engine.with_registered(pq.read_table(path))
    loaded, _errors = policy_lib.load_dir(settings.policies)
    baseline_set, scenario_set = comparison_sets(loaded, draft, as_of)
    peers = group_peers(loaded, draft, as_of)
    name_lists = match.load_name_lists(settings, [p.id for p in scenario_set + baseline_set if p.kind == "name_list"])

    scenario = run_engine(portrait, scenario_set, as_of, name_lists, draft.id)
    rows = rows_of(scenario, draft.id)
    counts = outcome_counts(rows)
    total = eligible_total(rows)
    over_budget = bool(pc.any(rows.column("over_budget")).as_py()) if rows.num_rows else False
    peer_rows = peer_results(portrait, peers, as_of, name_lists)
    base = figures(portrait, draft, peer_rows, as_of, name_lists)
    baseline = run_engine(portrait, baseline_set, as_of, name_lists, "") if baseline_set else \
        engine.RESULT_SCHEMA.empty_table()

    items = item_results(portrait, draft, name_lists)
    conditions = condition_breakdown(draft, items, rows)
    cond_unknown = _count(pc.is_null(reduce(pc.and_kleene, items))) if items else 0
    result = {
        "policy_id": draft.id,
        "policy_name": draft.name,
        "department": draft.department,
        "kind": draft.kind,
        "period": draft.period,
        "as_of": as_of.isoformat(),
        "portrait": str(path),
        "enterprises": portrait.num_rows,
        "draft_file": draft_file.file,
        "valid_from": draft_file.valid_from.isoformat(),
        "valid_to": draft_file.valid_to.isoformat(),
        "forced_in_force": not draft_file.in_force_on(as_of),
        "eligible": counts["eligible"],
        "total_amount": money(total),
        "missing_data": counts["missing_data"],
        "near_miss": counts["near_miss"],
        "outcomes": counts,
        "missing_data_detail": {"conditions_unknown": cond_unknown,
                                "benefit_base_missing": counts["missing_data"] - cond_unknown},
        "conditions": conditions,
        "blockers": blockers(conditions),
        "distribution": {f: distribution(rows, portrait, f) for f in BREAKDOWNS},
        "budget": budget_adequacy(draft, Decimal(base["demand_amount"]), total, over_budget),
        "group_peers": [p.id for p in peers],
        "overlap": overlap(draft, baseline_set, baseline, scenario),
        "sensitivity": sensitivity(portrait, draft, peer_rows, as_of, name_lists, base),
    }
    out = settings.output / "sandbox" / f"{_safe(draft.id)}_{as_of}.html"
    atomic_write_text(out, render(result))
    result["html"] = str(out)
    return result


def _safe(text: str) -> str:
    """A policy id as a file name part (ids are like WL-RS-2026-01; anything odd becomes _)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "draft"


# ---------------------------------------------------------------- the command

def summary_text(r: dict) -> str:
    lines = [
        f"政策沙盘：{r['policy_id']} {r['policy_name']}（画像日期 {r['as_of']}，{r['enterprises']:,d} 家企业）",
        f"  符合条件 {r['eligible']:,d} 家，预计兑现 {yuan(r['total_amount'])} 元；"
        f"差一项符合 {r['near_miss']:,d} 家，数据不全 {r['missing_data']:,d} 家。",
    ]
    if r["forced_in_force"]:
        lines.append(f"  注意：草案有效期 {r['valid_from']} 至 {r['valid_to']} 不含该日期，已按生效模拟。")
    if r["blockers"]["near_miss"]:
        b = r["blockers"]["near_miss"]
        lines.append(f"  主要卡点：第 {b['item'] + 1} 项（{b['text']}），{b['count']:,d} 家仅因此项未通过。")
    bud = r["budget"]
    if bud["budget"] is not None:
        lines.append(f"  预算 {yuan(bud['budget'])} 元，测算 {yuan(bud['demand_amount'])} 元，"
                     f"使用率 {bud['usage_percent']}%" + ("，超出预算" if bud["exceeds"] else "") + "。")
    lines.append(f"  与现行政策相比支出净变化 {yuan(r['overlap']['net_change'])} 元。")
    lines.append(f"  报告：{r['html']}")
    return "\n".join(lines)


def simulate_command(settings: Settings, draft: str | Path, as_of: dt.date | None = None, as_json: bool = False,
                     out=None, err=None) -> int:
    """`mianshen simulate DRAFT.yaml [--as-of DATE] [--json]`: 0 done, 1 invalid draft, 2 cannot run."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        result = simulate(settings, draft, as_of)
    except DraftError as exc:
        print("政策草案有错误，未进行模拟：", file=err)
        for e in exc.errors:
            print(f"  {e}", file=err)
        print(f"共 {len(exc.errors)} 处错误。请修改后重新模拟（可先运行 mianshen policies check）。", file=err)
        return 1
    except SandboxError as exc:
        print(str(exc), file=err)
        return 2
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2), file=out)
    else:
        print(summary_text(result), file=out)
    return 0
