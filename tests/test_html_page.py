"""The one page shell the run report, the policy sandbox and the effects page share."""
from __future__ import annotations

import re
from datetime import date

from pipelines import effects, html_page, report

AS_OF = date(2026, 11, 26)


def head(text: str) -> str:
    return text[: text.index("<body>")]


def test_a_page_is_self_contained_and_escapes_its_text():
    text = html_page.page("标题 <b>", "<p>正文</p>", "页脚 & 说明")
    assert text.startswith("<!DOCTYPE html>") and '<meta name="viewport"' in text
    assert "<title>标题 &lt;b&gt;</title>" in text and '<p class="footer">页脚 &amp; 说明</p>' in text
    assert "<p>正文</p>" in text
    # nothing fetched from elsewhere: no scripts, no linked stylesheets, no URLs
    assert not re.search(r"<script|<link|https?://|src=", text)


def test_the_report_and_the_effects_page_wear_the_one_shell():
    verdicts = [{"feed": "registry", "title": "企业登记信息", "department": "区市场监督管理局", "status": "accepted",
                 "reason": ""}]
    run_report = report.render(AS_OF, "r1", verdicts, [], report.key_figures(verdicts, [], {}), None, {}, None)
    effects_page = effects.render([], AS_OF, 0)
    for text, title in ((run_report, f"免申即享夜间运行报告 {AS_OF}"), (effects_page, f"惠企政策兑现效果分析 {AS_OF}")):
        assert head(text) == head(html_page.page(title, "", ""))
        assert text.count("<style>") == 1


def test_a_table_right_aligns_the_number_columns_and_escapes_cells():
    text = html_page.table(["名称", "数量"], [["<甲>", 3]], id_="t")
    assert text == ('<table id="t"><tr><th>名称</th><th>数量</th></tr>'
                    '<tr><td>&lt;甲&gt;</td><td class="num">3</td></tr></table>')
