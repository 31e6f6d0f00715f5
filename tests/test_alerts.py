"""Alerts reach a real receiver on loopback: an HTTP webhook and an SMTP server."""
from __future__ import annotations

import socketserver
import threading

from pipelines import alerts


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def test_webhook_receives_gate_alert_naming_department(webhook):
    url, received = webhook
    verdicts = [
        {"feed": "registry", "status": "accepted"},
        {"feed": "tax", "status": "stale", "reason": "年度纳税信息已过期 21 天"},
    ]
    for alert in alerts.gate_alerts(verdicts):
        assert alerts.send(alert, {"MIANSHEN_ALERT_WEBHOOK": url}) == ["webhook"]
    assert len(received) == 1
    assert received[0]["department"] == "区税务局"
    assert received[0]["kind"] == "feed_stale"
    assert "重新交付" in received[0]["text"]


def test_email_alert_over_local_smtp():
    messages = []

    class SMTPHandler(socketserver.StreamRequestHandler):
        def handle(self):
            self.wfile.write(b"220 localhost ESMTP\r\n")
            data_mode, lines = False, []
            while line := self.rfile.readline():
                if data_mode:
                    if line in (b".\r\n", b".\n"):
                        messages.append(b"".join(lines))
                        data_mode = False
                        self.wfile.write(b"250 OK\r\n")
                    else:
                        lines.append(line)
                    continue
                verb = line[:4].upper()
                if verb == b"DATA":
                    data_mode = True
                    self.wfile.write(b"354 go on\r\n")
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 OK\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.daemon_threads = True
    _serve(server)
    try:
        summary = {"policies": [{"policy_id": "WL-KJ-2026-01", "name": "研发费用补助", "over_budget": True,
                                 "eligible_amount": "2,100,000.00", "budget": "2,000,000.00", "period": "2026",
                                 "department": "区科学技术局"}]}
        env = {"MIANSHEN_ALERT_EMAIL": "ops@example.invalid", "MIANSHEN_SMTP_HOST": "127.0.0.1",
               "MIANSHEN_SMTP_PORT": str(server.server_address[1])}
        [alert] = alerts.over_budget_alerts(summary)
        assert alerts.send(alert, env) == ["email"]
    finally:
        server.shutdown()
        server.server_close()
    assert len(messages) == 1
    body = messages[0].decode("utf-8", "replace")
    assert "WL-KJ-2026-01" in body or "=?utf-8?" in body


def test_broken_channel_never_raises():
    env = {"MIANSHEN_ALERT_WEBHOOK": "http://127.0.0.1:9/nothing-listens-here"}
    assert alerts.send(alerts.Alert("task_failed", "标题", "内容"), env) == []


def test_no_over_budget_alert_once_the_hold_is_released():
    summary = {"policies": [
        {"policy_id": "WL-KJ-2026-01", "period": "2026", "over_budget": True, "name": "研发费用补助"},
        {"policy_id": "WL-RS-2026-03", "period": "2026", "over_budget": True, "name": "吸纳高校毕业生就业补贴"},
        {"policy_id": "WL-RS-2026-01", "period": "2026", "over_budget": False},
    ]}
    assert [a.title.split()[1] for a in alerts.over_budget_alerts(summary)] == ["WL-KJ-2026-01", "WL-RS-2026-03"]
    held = alerts.over_budget_alerts(summary, released={("WL-RS-2026-03", "2026"), ("WL-KJ-2026-01", "2025")})
    assert [a.title.split()[1] for a in held] == ["WL-KJ-2026-01"]
    assert "拨付已暂停" in held[0].title


def test_over_budget_alerts_after_matching_skip_released_holds(tmp_path, monkeypatch):
    """What the nightly DAG and `mianshen run` both call after matching: held policies alert,
    a hold released earlier (in the warehouse) or with this run does not."""
    from pipelines import ledger, warehouse
    from tests.conftest import make_settings

    for name in ("MIANSHEN_ALERT_WEBHOOK", "MIANSHEN_ALERT_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    settings = make_settings(tmp_path)
    summary = {"policies": [
        {"policy_id": p, "name": p, "over_budget": True, "eligible_amount": "2.00", "budget": "1.00",
         "period": "2026", "department": "区科学技术局"} for p in ("WL-A", "WL-B", "WL-C")]}
    with warehouse.connect(settings.warehouse_url).begin() as conn:
        ledger.release_budget_hold(conn, "WL-A", "2026", "操作员")
    sent = alerts.alert_over_budget(settings, summary, releasing=[("WL-B", "2026")])
    assert [a.title.split()[1] for a in sent] == ["WL-C"]
