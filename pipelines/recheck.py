"""再确认 and 事后监管: what tonight's data says about results already approved or paid.

免申不免审: before money moves, a result is checked again against the night's
portrait and policies (lifecycle.md "再确认"): every guard of its policy must
hold, and the night's match must still find it eligible. The same facts about
an enterprise (credit listings, 注销 / 吊销) drive the 事后监管清单 of results
already paid.

`finding` is the pure core (one result → a Chinese finding, or None when it
passes); `findings` and `enterprise_facts` are the I/O edge that reads the
night's portrait, the validated credit feed and matches.parquet.

Decisions (the spec is silent):
- A policy that was not evaluated tonight (out of force since approval, or its
  file now has an error) is re-checked on its guards only: its conditions
  cannot be re-evaluated, and an approved result is not suspended for a
  policy's validity ending before its payout.
- A result excluded by its exclusive group tonight fails (another policy of the
  group now applies); the department decides on the 复核 workbook.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Iterable

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.policies import GUARDS, Policy

GUARD_TEXT = {"registered": "在登记库中有登记信息", "active": "登记状态为存续（在业）",
              "not_dishonest": "未列入失信名单"}


@dataclass(frozen=True)
class Enterprise:
    """What tonight's data says about one enterprise, for the guards."""

    registered: bool = False
    status: str | None = None
    active: bool = False
    listings: tuple[tuple[str, date], ...] = ()   # (list type, listed on), in force tonight


@dataclass(frozen=True)
class NightResult:
    """The night's stored match of one key (absent: not stored, i.e. clearly not eligible)."""

    outcome: str
    reason: str | None = None
    excluded_by: str | None = None
    failed_guard: str | None = None


@dataclass
class Night:
    enterprises: dict[str, Enterprise] = field(default_factory=dict)
    results: dict[tuple[str, str, str], NightResult] = field(default_factory=dict)
    evaluated: set[str] = field(default_factory=set)          # policy ids matched tonight
    policies: dict[str, Policy] = field(default_factory=dict)


def guard_findings(guards: Iterable[str], enterprise: Enterprise | None) -> list[str]:
    """The Chinese reasons the guards fail for, in GUARDS order ([] when all hold)."""
    e, guards = enterprise or Enterprise(), tuple(guards)
    out = []
    for guard in guards:
        if guard == "registered" and not e.registered:
            out.append("在登记库中无登记信息")
        elif guard == "active" and not e.active and (e.registered or "registered" not in guards):
            out.append(f"登记状态为{e.status}" if e.status else "登记状态不明")
        elif guard == "not_dishonest" and e.listings:
            out += [f"列入{kind}名单（{on.isoformat()}）" for kind, on in e.listings]
    return out


def finding(policy_id: str, key: tuple[str, str, str], night: Night) -> str | None:
    """The re-check of one result: None when it passes, else the Chinese finding."""
    policy = night.policies.get(policy_id)
    reasons = guard_findings(policy.guards if policy else GUARDS, night.enterprises.get(key[2]))
    # A manual policy's conditions are only a pre-screen: its applications, reviewed by the
    # department, are re-checked on the guards alone.
    if policy_id in night.evaluated and (policy is None or policy.kind != "manual"):
        result = night.results.get(key)
        if result is None:
            if policy is not None and policy.kind == "name_list":
                reasons.append("已不在已受理的名单中")
            else:
                reasons.append("条件不再满足（本次比对不符合条件）")
        elif result.outcome == "guard_failed":
            if not reasons:
                reasons.append(f"未通过前置校验：{GUARD_TEXT.get(result.failed_guard or '', result.failed_guard)}")
        elif result.outcome == "excluded_by_group":
            reasons.append(f"条件不再满足：与政策 {result.excluded_by} 互斥")
        elif result.outcome != "eligible":
            reasons.append("条件不再满足：" + (result.reason or "本次比对不符合条件"))
    return "；".join(dict.fromkeys(reasons)) or None


# ---------------------------------------------------------------- the I/O edge

def enterprise_facts(settings: Settings, as_of: date, usccs: Iterable[str]) -> dict[str, Enterprise]:
    """Registration, status and credit listings in force on as_of, from the night's
    portrait and the validated credit delivery it was built from."""
    from pipelines import portrait

    wanted = sorted(set(usccs))
    path = settings.portrait_path(as_of)
    if not wanted or not path.exists():
        return {}
    table = pq.read_table(path, columns=["uscc", "registered", "status", "active", "dishonest"],
                          filters=[("uscc", "in", wanted)])
    listings: dict[str, list[tuple[str, date]]] = {}
    credit = portrait.read_feed(settings, as_of, "credit", ["uscc", "list_type", "listed_on", "removed_on"])
    if credit is not None:
        credit = credit.filter(pc.is_in(credit.column("uscc"), value_set=pc.unique(table.column("uscc"))))
        for row in credit.to_pylist():
            if row["listed_on"] <= as_of and (row["removed_on"] is None or row["removed_on"] > as_of):
                listings.setdefault(row["uscc"], []).append((row["list_type"] or "失信", row["listed_on"]))
    out = {}
    for row in table.to_pylist():
        listed = tuple(sorted(listings.get(row["uscc"], ())))
        if row["dishonest"] and not listed:
            listed = (("失信", as_of),)
        out[row["uscc"]] = Enterprise(registered=bool(row["registered"]), status=row["status"],
                                      active=bool(row["active"]), listings=listed)
    return out


def read_night(settings: Settings, as_of: date, rows: list[dict], policies: dict[str, Policy]) -> Night:
    """The facts the re-check of `rows` (ledger rows) needs from the night of as_of."""
    night = Night(policies=policies)
    if not rows:
        return night
    night.enterprises = enterprise_facts(settings, as_of, (r["uscc"] for r in rows))
    results = settings.matches_path(as_of)
    if results.exists():
        ids = sorted({r["policy_id"] for r in rows})
        columns = ["policy_id", "period", "uscc", "outcome", "excluded_by", "failed_guard"]
        schema = pq.read_schema(results)
        evaluated = pq.read_table(results, columns=["policy_id"], filters=[("policy_id", "in", ids)])
        night.evaluated = set(pc.unique(evaluated.column("policy_id")).to_pylist())
        # only the results of these enterprises under these policies: a province's night has millions
        codes = sorted({r["uscc"] for r in rows})
        table = pq.read_table(results, columns=columns + (["reason"] if "reason" in schema.names else []),
                              filters=[("policy_id", "in", ids), ("uscc", "in", codes)])
        wanted = {(r["policy_id"], r["period"], r["uscc"]) for r in rows}
        for m in table.to_pylist():
            key = (m["policy_id"], m["period"], m["uscc"])
            if key in wanted:
                night.results[key] = NightResult(m["outcome"], m.get("reason"), m["excluded_by"],
                                                 m["failed_guard"])
    return night


def findings(settings: Settings, as_of: date, rows: list[dict],
             policies: dict[str, Policy]) -> dict[int, str | None] | None:
    """Ledger id -> tonight's re-check finding (None: passes) for each of `rows`;
    None when the night has no portrait to re-check against (then nothing may be paid).
    policies: policy id -> the night's Policy (its guards and kind)."""
    if rows and not settings.portrait_path(as_of).exists():
        return None
    night = read_night(settings, as_of, rows, policies)
    return {r["id"]: finding(r["policy_id"], (r["policy_id"], r["period"], r["uscc"]), night) for r in rows}
