"""The production compose file's structure (no Docker engine runs here)."""
from __future__ import annotations

import re

import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]


def test_services_after_the_official_airflow_3_file():
    assert {"postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker", "airflow-init"} <= set(SERVICES)
    assert SERVICES["redis"]["profiles"] == ["celery"]
    assert SERVICES["airflow-worker"]["profiles"] == ["celery"]
    for name in ("postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert "healthcheck" in SERVICES[name], name


def test_image_pinned_to_the_locked_airflow_version():
    locked = re.search(r"^apache-airflow==([\d.]+)$", (ROOT / "requirements-lock.txt").read_text(), re.M).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG AIRFLOW_VERSION={locked}" in dockerfile
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python3.11" in dockerfile
    assert SERVICES["airflow-scheduler"]["image"] == f"mianshen-airflow:{locked}"


def test_no_literal_secrets_and_required_ones_refuse_to_be_empty():
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for key in ("AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_DB_PASSWORD", "MIANSHEN_DB_PASSWORD", "AIRFLOW_FERNET_KEY",
                "AIRFLOW_JWT_SECRET"):
        assert re.search(r"\$\{" + key + r":\?", text), key
    # every password-looking environment value is a variable, never a literal
    envs = [COMPOSE["x-airflow-common"]["environment"]] + [
        s.get("environment", {}) for s in SERVICES.values() if isinstance(s.get("environment"), dict)]
    for env in envs:
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|FERNET|SQL_ALCHEMY_CONN|WAREHOUSE_URL|BROKER|BACKEND", key):
                assert "${" in str(value), (key, value)
                assert not re.search(r"://[^:@/]+:(?!\$\{)[^@]+@", str(value)), (key, value)
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for line in example.splitlines():
        if re.match(r"^[A-Z_]*(PASSWORD|SECRET|FERNET_KEY)=", line):
            assert line.split("=", 1)[1].split("#")[0].strip() == "", line


def test_every_folder_the_pipeline_writes_is_mounted():
    env = COMPOSE["x-airflow-common"]["environment"]
    mounts = {v.split("}:", 1)[1].split(":")[0] for v in COMPOSE["x-airflow-common"]["volumes"]}
    for key in ("MIANSHEN_LANDING", "MIANSHEN_INBOX", "MIANSHEN_OUTPUT", "MIANSHEN_WORK"):
        assert env[key] in mounts, key
    assert "/opt/airflow/logs" in mounts
    assert any(v.endswith(":ro") and "/srv/mianshen/landing" in v for v in COMPOSE["x-airflow-common"]["volumes"])
