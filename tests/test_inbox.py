"""The inbox: every file taken exactly once, archived or rejected, and answered."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import inbox, intake
from tests.conftest import ROOT, fresh_airflow_home, make_settings
from tests.namelist_workbooks import HEADER, code, department_list, name_list_policy, registry_rows, xls_bytes, xlsx

POLICY = "WL-RS-2026-09"
DEPT = "区人力资源和社会保障局"
NAMES = dict(registry_rows(20))
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)   # 10:00 in Wolong
DAY = "2026-11-26"



def good(i: int, amount: object = 10000) -> list[object]:
    return [i, code(i), NAMES[code(i)], amount, None]


def make_env(base: Path, with_registry: bool = True):
    policies = base / "policies"
    policies.mkdir(parents=True)
    (policies / "rs.yaml").write_text(name_list_policy(POLICY, DEPT), encoding="utf-8")
    settings = make_settings(base, policies=policies)
    if with_registry:
        folder = settings.work / "validated" / "registry"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"uscc": list(NAMES), "name": list(NAMES.values())}), folder / "2026-11-25.parquet")
    settings.inbox.mkdir(parents=True)
    return settings


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path)


def drop(settings, folder: str, name: str, content: bytes, age: timedelta = timedelta(hours=1)) -> Path:
    path = settings.inbox / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    ts = (NOW - age).timestamp()
    os.utime(path, (ts, ts))
    return path


def workbook(tmp_path: Path, rows: list[list[object]], name: str = "src.xlsx") -> bytes:
    return xlsx(tmp_path / name, {"名单": department_list(rows)}).read_bytes()


def answer_rows(path: Path) -> list[tuple]:
    wb = openpyxl.load_workbook(path, read_only=True)
    return [tuple(r) for r in wb.active.iter_rows(values_only=True)]


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() or p.is_symlink())


def test_accepted_list_is_archived_stored_and_answered(env, tmp_path):
    content = workbook(tmp_path, [good(1), good(2, "1.2万"), good(3), good(4), good(5),
                                  [6, code(6), "错的名字", 100, None]])
    drop(env, POLICY, "3月名单.xlsx", content)
    [r] = inbox.process(env, now=NOW)
    assert r["status"] == "accepted" and r["rows"] == 6 and r["errors"] == 1
    sha = r["sha256"]
    assert r["archived_to"] == f"_archive/{POLICY}/{DAY}/{sha[:12]}_3月名单.xlsx"
    assert (env.inbox / r["archived_to"]).read_bytes() == content
    assert not (env.inbox / POLICY / "3月名单.xlsx").exists()
    stored = pq.read_table(env.work / "namelists" / POLICY / f"{sha[:16]}.parquet")
    assert stored.num_rows == 5
    assert stored.column("received_at").to_pylist()[0] == NOW
    answer = env.inbox / "_outbox" / DEPT / DAY / "3月名单_处理结果.xlsx"
    assert r["answer"] == str(answer.relative_to(env.inbox))
    rows = answer_rows(answer)
    assert rows[0][0] == "已接收 5 行，错误 1 行，金额合计 52,000.00 元"
    assert rows[1] == ("原行号",) + tuple(HEADER) + ("错误说明",)
    assert rows[2][-1] is None and rows[2][2] == code(1)
    assert rows[-1][0] == 9 and "不一致" in rows[-1][-1]
    journal = [json.loads(line) for line in (env.inbox / "_state" / "processed.jsonl").read_text("utf-8").splitlines()]
    assert [(j["sha256"], j["status"]) for j in journal] == [(sha, "accepted")]


def test_same_file_twice_under_two_names_is_processed_once(env, tmp_path):
    content = workbook(tmp_path, [good(1), good(2)])
    drop(env, POLICY, "a.xlsx", content)
    drop(env, POLICY, "b（副本）.xlsx", content)
    first = inbox.process(env, now=NOW)
    assert [(r["file"], r["status"]) for r in first] == [("a.xlsx", "accepted"), ("b（副本）.xlsx", "duplicate")]
    dup = env.inbox / first[1]["archived_to"]
    assert dup.parent.name == "duplicates" and dup.read_bytes() == content
    assert "内容完全相同" in Path(str(dup) + ".note.txt").read_text("utf-8")
    assert answer_rows(env.inbox / first[1]["answer"])[0][0].startswith("未处理：该文件与")
    # dropped again later, in another policy's folder, under a third name: still a duplicate
    drop(env, "WL-OTHER", "c.xlsx", content)
    drop(env, POLICY, "a.xlsx", content)
    again = inbox.process(env, now=NOW + timedelta(days=1))
    assert {r["status"] for r in again} == {"duplicate"}
    assert len(list((env.work / "namelists" / POLICY).glob("*.parquet"))) == 1
    statuses = [json.loads(x)["status"] for x in (env.inbox / "_state" / "processed.jsonl").read_text("utf-8").splitlines()]
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 3


def test_file_still_being_copied_waits_for_the_next_pass(env, tmp_path):
    path = drop(env, POLICY, "new.xlsx", workbook(tmp_path, [good(1)]), age=timedelta(seconds=10))
    drop(env, POLICY, "~$new.xlsx", b"lock", age=timedelta(hours=1))
    drop(env, POLICY, "big.xlsx.part", b"partial", age=timedelta(hours=1))
    drop(env, POLICY, ".hidden", b"x", age=timedelta(hours=1))
    assert inbox.process(env, now=NOW) == [{"folder": POLICY, "file": "new.xlsx", "status": "waiting"}]
    assert path.exists() and not (env.inbox / "_archive").exists()
    [r] = inbox.process(env, now=NOW + timedelta(minutes=5))
    assert r["status"] == "accepted"
    assert sorted(p.name for p in (env.inbox / POLICY).iterdir()) == [".hidden", "big.xlsx.part", "~$new.xlsx"]


def test_unreadable_file_is_rejected_with_an_explanation(env):
    drop(env, POLICY, "名单.xlsx", b"PK\x03\x04 broken")
    [r] = inbox.process(env, now=NOW)
    assert r["status"] == "rejected" and "损坏" in r["reason"]
    assert r["archived_to"].startswith(f"_rejected/{POLICY}/{DAY}/")
    rows = answer_rows(env.inbox / "_outbox" / DEPT / DAY / "名单_处理结果.xlsx")
    assert rows == [("未接收：文件「名单.xlsx」已损坏或不完整，无法作为Excel工作簿打开",)]


def test_rejected_list_answer_has_every_row_with_its_error(env, tmp_path):
    drop(env, POLICY, "名单.xls", xls_bytes([HEADER, good(1), [2, "abc", "某公司", 5, None], [3, code(3), "某公司", "x", None]]))
    [r] = inbox.process(env, now=NOW)
    assert r["status"] == "rejected" and "超过20%" in r["reason"]
    assert not (env.work / "namelists").exists()
    rows = answer_rows(env.inbox / r["answer"])
    assert rows[0][0].startswith("未接收：错误行占比66.7%")
    assert rows[2][-1] is None
    assert "无效" in rows[3][-1] and "金额" in rows[4][-1]


def test_unknown_policy_folder_is_rejected(env, tmp_path):
    drop(env, "WL-NOPE", "x.xlsx", workbook(tmp_path, [good(1)]))
    [r] = inbox.process(env, now=NOW)
    assert r["status"] == "rejected" and "WL-NOPE" in r["reason"]
    assert (env.inbox / "_outbox" / "WL-NOPE" / DAY / "x_处理结果.xlsx").exists()


def test_symlinks_are_rejected_not_followed(env, tmp_path):
    secret = tmp_path / "secret.xlsx"
    secret.write_bytes(workbook(tmp_path, [good(1)]))
    (env.inbox / POLICY).mkdir()
    (env.inbox / POLICY / "link.xlsx").symlink_to(secret)
    (env.inbox / "_linked_folder").symlink_to(tmp_path)
    results = inbox.process(env, now=NOW)
    assert {(r["file"], r["status"]) for r in results} == {("link.xlsx", "rejected"), ("_linked_folder", "rejected")}
    moved = env.inbox / f"_rejected/{POLICY}/{DAY}/link.xlsx"
    assert moved.is_symlink() and secret.exists()
    assert not (env.work / "namelists").exists()


def test_no_registry_yet_leaves_the_file_for_later(tmp_path):
    settings = make_env(tmp_path, with_registry=False)
    path = drop(settings, POLICY, "a.xlsx", workbook(tmp_path, [good(1)]))
    [r] = inbox.process(settings, now=NOW)
    assert r["status"] == "deferred" and path.exists()
    assert not (settings.inbox / "_state" / "processed.jsonl").exists()


def test_folder_without_handler_is_left_alone(env, monkeypatch):
    monkeypatch.delitem(intake.HANDLERS, "_payments", raising=False)
    path = drop(env, "_payments", "pay.xlsx", b"anything")
    [r] = inbox.process(env, now=NOW)
    assert r["status"] == "no_handler" and path.exists()


def test_handler_crash_leaves_the_file(env, monkeypatch):
    def boom(settings, path, sha, folder):
        raise RuntimeError("bug")

    monkeypatch.setitem(intake.HANDLERS, "_reviews", boom)
    path = drop(env, "_reviews", "r.xlsx", b"x")
    [r] = inbox.process(env, now=NOW)
    assert r["status"] == "error" and path.exists()
    assert inbox.inbox_process_command(env) == 1


def test_nothing_is_overwritten_same_name_other_content_same_day(env, tmp_path):
    drop(env, POLICY, "名单.xlsx", workbook(tmp_path, [good(1)]))
    inbox.process(env, now=NOW)
    drop(env, POLICY, "名单.xlsx", workbook(tmp_path, [good(2)]))
    inbox.process(env, now=NOW + timedelta(hours=1))
    assert len(list((env.inbox / "_archive" / POLICY / DAY).iterdir())) == 2
    assert sorted(p.name for p in (env.inbox / "_outbox" / DEPT / DAY).iterdir()) == ["名单_处理结果.xlsx", "名单_处理结果_2.xlsx"]


def test_output_folders_are_not_world_readable(env, tmp_path):
    drop(env, POLICY, "a.xlsx", workbook(tmp_path, [good(1)]))
    [r] = inbox.process(env, now=NOW)
    for rel in ("_archive", "_outbox", "_state", f"_outbox/{DEPT}/{DAY}"):
        assert (env.inbox / rel).stat().st_mode & 0o007 == 0, rel
    assert (env.inbox / r["answer"]).stat().st_mode & 0o777 == 0o640


def test_crash_after_journal_is_finished_by_the_next_pass(env, tmp_path):
    content = workbook(tmp_path, [good(1)])
    path = drop(env, POLICY, "a.xlsx", content)
    [r] = inbox.process(env, now=NOW)
    # simulate a pass that journaled but died before moving: put the file back
    archived = env.inbox / r["archived_to"]
    shutil.move(archived, path)
    [again] = inbox.process(env, now=NOW)
    assert again["status"] == "recovered" and archived.read_bytes() == content


def test_two_passes_at_once_take_each_file_once(env, tmp_path):
    for i in range(1, 6):
        drop(env, POLICY, f"list{i}.xlsx", workbook(tmp_path, [good(i), good(i + 5)], name=f"s{i}.xlsx"))
    script = ("import json,sys; from pipelines import inbox; from pipelines.config import load_settings;"
              "print(json.dumps(inbox.process(load_settings(), settle_seconds=0)))")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MIANSHEN_DATA": str(tmp_path),
                   "MIANSHEN_POLICIES": str(env.policies), "MIANSHEN_LANDING": str(env.landing)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=environment, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    taken = [r["file"] for out in outputs for r in out]
    assert sorted(taken) == [f"list{i}.xlsx" for i in range(1, 6)]
    assert all(r["status"] == "accepted" for out in outputs for r in out)
    journal = (env.inbox / "_state" / "processed.jsonl").read_text("utf-8").splitlines()
    assert len(journal) == 5 and len({json.loads(x)["sha256"] for x in journal}) == 5


def test_safe_component_and_temp_names():
    assert inbox.safe_component("../../etc/passwd") == "_.._etc_passwd"
    assert inbox.safe_component("..") == "未知"
    assert inbox.safe_component("区人力资源和社会保障局") == "区人力资源和社会保障局"
    assert all(inbox.is_temporary(n) for n in ("~$a.xlsx", ".a", "a.part", "a.TMP", "a.crdownload"))
    assert not inbox.is_temporary("名单.xlsx")


def test_formula_text_from_a_sender_stays_text(tmp_path):
    """Through the one export neutraliser (pipelines.outputs.workbook.neutralise):
    text, with the apostrophe that keeps a spreadsheet from evaluating it on edit."""
    out = tmp_path / "a.xlsx"
    inbox.write_answer(out, "摘要", [intake.RowOutcome(2, {"企业名称": "=HYPERLINK(\"x\")"}, "错")])
    wb = openpyxl.load_workbook(out)
    cell = wb.active.cell(row=3, column=2)
    assert cell.value == "'=HYPERLINK(\"x\")" and cell.data_type == "s"


@pytest.mark.slow
def test_dag_over_a_folder_of_sample_workbooks(tmp_path):
    """The inbox DAG through dag.test(), in a subprocess on its own Airflow home."""
    data = tmp_path / "data"
    settings = make_env(data)
    # ages do not matter here: the DAG uses the real clock, so make files old
    old = time.time() - 3600
    samples = {
        f"{POLICY}/good.xlsx": workbook(tmp_path, [good(1), good(2, "¥3,000")], "g.xlsx"),
        f"{POLICY}/good_copy.xlsx": workbook(tmp_path, [good(1), good(2, "¥3,000")], "g.xlsx"),
        f"{POLICY}/legacy.xls": xls_bytes(department_list([good(3, 12000.0), good(4, "1.2万")])),
        f"{POLICY}/csv_named.xlsx": f"统一社会信用代码,企业名称,奖补金额（元）\n{code(5)},{NAMES[code(5)]},500\n".encode("gbk"),
        f"{POLICY}/broken.xlsx": b"PK\x03\x04 broken",
        f"{POLICY}/wrong.xlsx": xlsx(tmp_path / "w.xlsx", {"S": [["姓名", "工资"], ["张三", 1]]}).read_bytes(),
        "WL-NOPE/list.xlsx": workbook(tmp_path, [good(6)], "n.xlsx"),
    }
    for rel, content in samples.items():
        p = settings.inbox / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        os.utime(p, (old, old))
    environment = {
        **os.environ, "PYTHONPATH": str(ROOT), **fresh_airflow_home(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MIANSHEN_DATA": str(data), "MIANSHEN_POLICIES": str(settings.policies),
        "MIANSHEN_LANDING": str(settings.landing),
    }
    script = ("import sys; sys.path.insert(0, 'dags'); import mianshen_inbox as m;"
              "run = m.dag.test(); print('STATE', run.state)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)
    assert "STATE success" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    journal = [json.loads(x) for x in (settings.inbox / "_state" / "processed.jsonl").read_text("utf-8").splitlines()]
    status = {j["file"]: j["status"] for j in journal}
    assert status == {"good.xlsx": "accepted", "good_copy.xlsx": "duplicate", "legacy.xls": "accepted",
                      "csv_named.xlsx": "accepted", "broken.xlsx": "rejected", "wrong.xlsx": "rejected",
                      "list.xlsx": "rejected"}
    assert files_under(settings.inbox / POLICY) == []
    assert len(list((settings.inbox / "_outbox" / DEPT / DAY_TODAY()).iterdir())) == 6
    assert len(list((settings.work / "namelists" / POLICY).glob("*.parquet"))) == 3


def DAY_TODAY() -> str:  # noqa: N802 - the folder day of a pass run now
    return inbox.local_day(datetime.now(timezone.utc))
