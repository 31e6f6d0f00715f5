"""Alerts to operators and departments: a webhook (JSON POST) and/or email.

Channels are configured by the environment, so the same code serves a test
receiver on loopback and the bureau's real gateway:
  MIANSHEN_ALERT_WEBHOOK   URL that receives {"title", "text", "department", "kind"}
  MIANSHEN_ALERT_EMAIL     comma-separated recipients, sent over SMTP
  MIANSHEN_SMTP_HOST / MIANSHEN_SMTP_PORT / MIANSHEN_SMTP_FROM (default localhost:25)
With no channel configured an alert is only logged.
"""
from __future__ import annotations

import json
import logging
import os
import smtplib
import urllib.request
from dataclasses import asdict, dataclass
from email.message import EmailMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    kind: str              # task_failed | feed_stale | feed_rejected | over_budget | gate_closed
    title: str             # Chinese, one line
    text: str              # Chinese: what happened and what to do
    department: str | None = None


def send(alert: Alert, env: dict[str, str] | None = None) -> list[str]:
    """Deliver through every configured channel; returns the channels used.
    A broken channel is logged, never raised: an alert must not fail the run."""
    env = os.environ if env is None else env
    used = []
    webhook = env.get("MIANSHEN_ALERT_WEBHOOK")
    if webhook:
        try:
            request = urllib.request.Request(
                webhook, data=json.dumps(asdict(alert), ensure_ascii=False).encode("utf-8"),
                headers={"Content-Type": "application/json; charset=utf-8"}, method="POST")
            with urllib.request.urlopen(request, timeout=10):
                used.append("webhook")
        except OSError as exc:
            log.error("alert webhook failed: %s", exc)
    recipients = [r.strip() for r in env.get("MIANSHEN_ALERT_EMAIL", "").split(",") if r.strip()]
    if recipients:
        message = EmailMessage()
        message["Subject"] = alert.title
        message["From"] = env.get("MIANSHEN_SMTP_FROM", "mianshen@localhost")
        message["To"] = ", ".join(recipients)
        message.set_content(alert.text + (f"\n\n相关部门：{alert.department}" if alert.department else ""))
        try:
            with smtplib.SMTP(env.get("MIANSHEN_SMTP_HOST", "localhost"), int(env.get("MIANSHEN_SMTP_PORT", "25")),
                              timeout=10) as smtp:
                smtp.send_message(message)
            used.append("email")
        except (OSError, smtplib.SMTPException) as exc:
            log.error("alert email failed: %s", exc)
    log.warning("alert %s: %s", alert.kind, alert.title)
    return used


def gate_alerts(verdicts: list[dict]) -> list[Alert]:
    """One alert per feed that keeps the gate closed, addressed to its department."""
    from pipelines.contracts import FEEDS

    alerts = []
    for v in verdicts:
        if v.get("status") == "accepted":
            continue
        feed = FEEDS[v["feed"]]
        kind = "feed_stale" if v["status"] in ("stale", "missing") else "feed_rejected"
        todo = {
            "stale": "请尽快重新交付最新数据（含 _SUCCESS 完成标记）。",
            "missing": "请按约定目录交付数据，并放置 _SUCCESS 完成标记。",
            "drift": "请核实数据量变化；如属正常，经办人员可在本次运行参数中设置 accept_drift=true 后重跑。",
            "rejected": "请根据问题行清单修正后重新交付。",
        }.get(v["status"], "请核实后重新交付。")
        alerts.append(Alert(
            kind=kind,
            title=f"【免申即享】{feed.department}「{feed.title}」未通过数据闸门",
            text=f"{v.get('reason') or ''}\n处理建议：{todo}",
            department=feed.department,
        ))
    return alerts


def over_budget_alerts(match_summary: dict, released=()) -> list[Alert]:
    """One alert per over-budget policy whose payout is held. `released`:
    (policy_id, period) pairs an operator has released (ledger.holds_released):
    their payout is not paused, so no alert asks for the release again."""
    released = {(str(p), str(q)) for p, q in released}
    alerts = []
    for policy in (match_summary or {}).get("policies", []):
        if policy.get("over_budget") and (policy["policy_id"], str(policy.get("period", ""))) not in released:
            alerts.append(Alert(
                kind="over_budget",
                title=f"【免申即享】政策 {policy['policy_id']} 符合金额超出预算，拨付已暂停",
                text=(f"政策“{policy.get('name', '')}”本期符合金额合计 {policy.get('eligible_amount', '')} 元，"
                      f"超出预算 {policy.get('budget', '')} 元。请执行部门确认后，由经办人员在运行参数 release_holds "
                      f"中填写 {policy['policy_id']}:{policy.get('period', '')} 解除暂停。"),
                department=policy.get("department"),
            ))
    return alerts


def task_failure_callback(context) -> None:
    """Airflow on_failure_callback: tells operators which task failed and how to rerun it."""
    ti = context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    exception = context.get("exception")
    send(Alert(
        kind="task_failed",
        title=f"【免申即享】任务失败：{dag_id}.{task_id}",
        text=(f"运行 {context.get('run_id')} 中的任务 {task_id} 失败：{exception}\n"
              "处理建议：在 Airflow 界面查看该任务日志，修正原因后对该任务执行“清除（Clear）”即可安全重跑。"),
    ))


def alert_over_budget(settings, match_summary: dict, releasing=()) -> list[Alert]:
    """After matching: send an alert for every over-budget policy whose payout is held,
    unless an operator has released it (before, or with this run's `releasing`).
    The nightly DAG and `mianshen run` both call this; returns the alerts sent."""
    from pipelines import ledger

    held = over_budget_alerts(match_summary, ledger.holds_released(settings, releasing))
    for alert in held:
        send(alert)
    return held
