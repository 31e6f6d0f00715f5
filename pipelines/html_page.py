"""The one page shell and stylesheet of the HTML pages: the run report, the policy sandbox, the effects page.

A page is self-contained: one inline stylesheet, charts as inline SVG, no
external resource and no JavaScript, so that it opens from a file share with
no network. The helpers here are the pieces the pages share: escaping,
amounts in 元, tables, key figures and bar charts.
"""
from __future__ import annotations

import html
from decimal import Decimal

esc = html.escape

STYLE = """body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;margin:2em;color:#222}
h1{font-size:1.6em} h2{border-bottom:2px solid #c0392b;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #bbb;padding:.3em .6em} th{background:#f3f3f3}
.num{text-align:right} tr.bad td{background:#fdecea} b.bad{color:#c62828} b.good{color:#2e7d32} .warn{color:#b26a00}
.badge{display:inline-block;padding:.2em .8em;border-radius:1em;color:#fff} .open{background:#2e7d32} .closed{background:#c62828}
.bar{fill:#c0392b} .neg{fill:#1565c0} svg text{font-size:13px} svg .title{font-weight:bold}
.kpi{display:inline-block;margin-right:2em} .kpi b{font-size:1.6em;display:block}
.notice{background:#fff8e1;border-left:4px solid #f9a825;padding:.6em 1em} .footer{color:#777}"""


def page(title: str, body: str, footer: str, style: str = "") -> str:
    """A whole page: `title` and `footer` are text, `body` is HTML; `style` adds rules of this page."""
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>
{STYLE}
{style}
</style></head><body>
{body}
<p class="footer">{esc(footer)}</p>
</body></html>"""


def yuan(value) -> str:
    """An amount in 元 as a page shows it: thousands separators, two decimals, exact."""
    return f"{Decimal(value):,.2f}"


def td(value, num: bool = False) -> str:
    return f'<td class="num">{esc(str(value))}</td>' if num else f"<td>{esc(str(value))}</td>"


def table(head: list[str], rows: list[list], num_from: int = 1, id_: str = "") -> str:
    """A table of text cells; columns from `num_from` on are right-aligned numbers."""
    ident = f' id="{id_}"' if id_ else ""
    body = "".join("<tr>" + "".join(td(v, i >= num_from) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table{ident}><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr>{body}</table>"


def kpi_row(items: list[tuple[str, str, str]]) -> str:
    """The row of key figures at the top of a page: (label, element id, value text)."""
    return "<div>" + "\n".join(f'<span class="kpi">{label}<b id="{ident}">{value}</b></span>'
                               for label, ident, value in items) + "</div>"


def svg_figure(title: str, width: int, height: int, content: str) -> str:
    """An inline SVG chart with its title."""
    return (
        f'<figure class="chart"><svg role="img" aria-label="{esc(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><text x="0" y="16" class="title">{esc(title)}</text>{content}</svg></figure>'
    )


def bar_chart(title: str, items: list[tuple[str, int | Decimal]], unit: str = "") -> str:
    """A horizontal bar chart as inline SVG. Values stay exact (counts, Decimal
    amounts); only the bar lengths, which are geometry, are floats."""
    if not items:
        return ""
    width, bar_h, label_w = 720, 22, 260
    peak = max((v for _, v in items), default=0) or 1
    rows = []
    for i, (label, value) in enumerate(items):
        y = 30 + i * (bar_h + 6)
        w = (width - label_w - 120) * float(Decimal(value) / Decimal(peak))
        rows.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{esc(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3"></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{value:,.0f}{unit}</text>'
        )
    height = 40 + len(items) * (bar_h + 6)
    return svg_figure(title, width, height, "".join(rows))
