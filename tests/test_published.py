"""The published 惠企政策清单 and 办事指南清单: their form, the change log between
publications, and the page in headless Chromium at phone and desktop widths."""
from __future__ import annotations

import re
import subprocess
from datetime import date

import pytest
from openpyxl import load_workbook

from pipelines.config import Settings
from pipelines.outputs import published
from pipelines.policies import load_dir
from tests.conftest import require_chromium

D1, D2, D3 = date(2026, 11, 26), date(2026, 11, 27), date(2026, 11, 28)
UNIT = "卧龙区惠企政策“免申即享”服务平台"


def policy_file(pid: str, amount: int = 5000, extra: str = "", name: str = "小微企业稳岗奖励") -> str:
    return f"""id: {pid}
name: {name}
department: 区人力资源和社会保障局
basis: 卧政〔2026〕3号
kind: condition
period: "2026"
valid_from: 2026-01-01
valid_to: 2026-12-31
{extra}conditions:
  - {{field: division_code, op: eq, value: "411303"}}
benefit: {{type: fixed, amount: {amount}}}
guide:
  summary: 对在卧龙区依法参保的小微企业给予稳岗奖励，单户最高5万元，经数据比对后免申即享，企业只需在线确认申领意愿。
  time_limit: 10个工作日
  process: 数据比对 → 短信告知 → 企业确认 → 部门审核 → 公示 → 拨付
  contact: 区人社局就业促进股，0377-63211001
"""


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    for pid in ("WL-A", "WL-B", "WL-C"):
        (folder / f"{pid}.yaml").write_text(policy_file(pid), encoding="utf-8")
    return folder


def publish(tmp_path, library, as_of):
    settings = Settings(landing=tmp_path, inbox=tmp_path, policies=library, output=tmp_path / "output",
                        work=tmp_path, warehouse_url="sqlite://", expectations=tmp_path)
    paths = published.publish(settings, as_of, *load_dir(library), UNIT)
    return paths, published.read_json(settings.lists_dir(as_of) / published.MANIFEST)


def test_one_amount_changed_and_one_repealed_give_one_修改_and_one_废止(tmp_path, library):
    _, first = publish(tmp_path, library, D1)
    assert first["changes"] == [] and first["previous_published_on"] is None
    (library / "WL-A.yaml").write_text(policy_file("WL-A", amount=8000), encoding="utf-8")
    (library / "WL-B.yaml").write_text(policy_file("WL-B", extra="repealed_on: 2026-11-27\n"), encoding="utf-8")
    _, second = publish(tmp_path, library, D2)
    assert [(c["change"], c["id"]) for c in second["changes"]] == [("修改", "WL-A"), ("废止", "WL-B")]
    assert "兑现方式及标准" in second["changes"][0]["note"]
    # the repealed policy stays listed, with its status and date
    assert second["policies"]["WL-B"]["status"] == "已废止"
    assert second["policies"]["WL-B"]["status_note"] == "自2026年11月27日起废止"
    # nothing changed the night after: the same publication (date and change log) is shown again
    _, third = publish(tmp_path, library, D3)
    assert third["published_on"] == "2026-11-27" and third["changes"] == second["changes"]


def test_new_expired_and_unreadable_files(tmp_path, library):
    publish(tmp_path, library, D1)
    (library / "WL-D.yaml").write_text(policy_file("WL-D"), encoding="utf-8")
    (library / "WL-C.yaml").write_text("id: WL-C\nname: [broken", encoding="utf-8")   # a typo is not a 失效
    (library / "WL-B.yaml").unlink()
    _, second = publish(tmp_path, library, D2)
    assert [(c["change"], c["id"]) for c in second["changes"]] == [("失效", "WL-B"), ("新增", "WL-D")]
    assert "WL-C" in second["policies"] and "WL-B" not in second["policies"]


def test_workbooks_are_laid_out_as_an_office_publishes_them(tmp_path, library):
    (library / "WL-B.yaml").write_text(policy_file("WL-B", extra="repealed_on: 2026-06-30\n"), encoding="utf-8")
    paths, _ = publish(tmp_path, library, D1)
    folder = tmp_path / "output" / str(D1) / "lists"
    ws = load_workbook(folder / published.POLICY_LIST).active
    assert ws["A1"].value == "卧龙区惠企政策清单"
    assert ws["A2"].value == f"发布日期：2026年11月26日　　发布单位：{UNIT}"
    assert [ws.cell(r, 1).value for r in (4, 5, 6)] == [1, 2, 3]
    header = [c.value for c in ws[3]]
    assert header[:4] == ["序号", "政策编号", "政策名称", "政策类别"]
    status = header.index("状态") + 1
    assert ws.cell(5, status).value == "已废止" and ws.cell(4, status).value == "生效"
    benefit = header.index("兑现方式及标准") + 1
    assert ws.cell(4, benefit).alignment.wrap_text
    guide = load_workbook(folder / published.GUIDE_LIST).active
    text = [c for row in guide.iter_rows(values_only=True) for c in row if c]
    assert "区人社局就业促进股，0377-63211001" in text
    assert guide.column_dimensions["E"].width <= 52 and guide["E4"].alignment.wrap_text
    assert {p.name for p in paths} == {published.POLICY_LIST, published.GUIDE_LIST, published.CHANGE_LOG,
                                       published.PAGE, published.MANIFEST}


def test_the_page_has_no_external_resource(tmp_path, library):
    publish(tmp_path, library, D1)
    html = (tmp_path / "output" / str(D1) / "lists" / published.PAGE).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html) and "<script" not in html
    assert 'lang="zh-CN"' in html and "办事指南清单" in html


MEASURE = """<script>document.addEventListener("DOMContentLoaded", function () {
  document.body.setAttribute("data-overflow", String(document.documentElement.scrollWidth - window.innerWidth));
});</script>"""


@pytest.mark.parametrize("width", [390, 1280])
def test_the_page_reads_in_headless_chromium(tmp_path, library, width):
    chromium = require_chromium()
    publish(tmp_path, library, D1)
    (library / "WL-B.yaml").write_text(policy_file("WL-B", extra="repealed_on: 2026-11-27\n"), encoding="utf-8")
    publish(tmp_path, library, D2)
    page = tmp_path / "output" / str(D2) / "lists" / published.PAGE
    # A copy with a measuring script (the published page itself has none).
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},900"]
    dom = subprocess.run(common + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert 'data-overflow="0"' in dom or re.search(r'data-overflow="-\d+"', dom), "page wider than the screen"
    assert "卧龙区惠企政策清单" in dom and 'id="published-on">2026年11月27日<' in dom
    assert "废止" in dom and "小微企业稳岗奖励（WL-B）" in dom
    shot = tmp_path / f"page-{width}.png"
    subprocess.run(common + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.exists() and shot.stat().st_size > 5_000
