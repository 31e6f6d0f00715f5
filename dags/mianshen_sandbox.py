"""mianshen_sandbox: the policy sandbox (政策沙盘) and the payout effect analysis (绩效评价), on demand.

Triggered by hand from the Airflow UI (no schedule). Parameters:
- `mode`: `simulate` (evaluate a draft policy against a portrait) or `effects`
  (the descriptive difference-in-differences report of paid policies);
- `draft` (simulate only): the path of a draft policy YAML file on the
  workers, or the YAML text itself pasted into the form;
- `as_of`: the portrait date; empty means the newest portrait.

Thin wiring only: the task calls `pipelines.sandbox.simulate` or
`pipelines.effects.analyse` and logs the path of the HTML page it wrote. An
invalid draft fails the task (no retry) with the checker's errors in Chinese;
no failure alert is sent: the person who triggered the run reads the task log,
and a typo in a draft is not an operations incident.
"""
from __future__ import annotations

import logging

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pipelines.orchestration import DAG_TIMEZONE

log = logging.getLogger(__name__)


@task(retries=0)
def run_sandbox() -> str:
    from datetime import date

    from pipelines import effects, sandbox
    from pipelines.config import load_settings

    params = get_current_context()["params"]
    settings = load_settings()
    as_of = date.fromisoformat(str(params["as_of"])) if params.get("as_of") else None
    if params["mode"] == "effects":
        try:
            page = effects.analyse(settings, as_of)
        except FileNotFoundError as exc:
            raise AirflowFailException(str(exc)) from None
        log.info("兑现效果分析报告 (effects report): %s", page)
        return str(page)
    draft = params.get("draft")
    if not draft or not str(draft).strip():
        raise AirflowFailException("模拟模式需要参数 draft：政策草案文件路径，或直接粘贴草案 YAML 内容。")
    try:
        result = sandbox.simulate(settings, str(draft), as_of)
    except sandbox.DraftError as exc:
        lines = "\n".join(f"  {e}" for e in exc.errors)
        raise AirflowFailException(f"政策草案有错误，未进行模拟（共 {len(exc.errors)} 处）：\n{lines}") from None
    except sandbox.SandboxError as exc:
        raise AirflowFailException(str(exc)) from None
    log.info("政策沙盘：符合条件 %s 家，预计金额 %s 元", result["eligible"], result["total_amount"])
    log.info("政策沙盘报告 (sandbox page): %s", result["html"])
    return result["html"]


@dag(
    dag_id="mianshen_sandbox",
    description="政策沙盘（草案模拟）与兑现效果分析（绩效评价），手动触发",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz=DAG_TIMEZONE),
    catchup=False,
    tags=["mianshen", "政策沙盘"],
    params={
        "mode": Param("simulate", type="string", enum=["simulate", "effects"],
                      values_display={"simulate": "政策沙盘：模拟政策草案", "effects": "兑现效果分析（绩效评价）"},
                      description="simulate：模拟政策草案；effects：已拨付政策的效果分析"),
        "draft": Param(None, type=["null", "string"], format="multiline",
                       description="政策草案：YAML 文件在服务器上的完整路径，或直接粘贴 YAML 内容（仅 simulate 需要）"),
        "as_of": Param(None, type=["null", "string"], format="date",
                       description="企业画像日期（留空则用最新一期画像）"),
    },
    doc_md=__doc__,
)
def mianshen_sandbox():
    run_sandbox()


mianshen_sandbox()
