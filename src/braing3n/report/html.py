"""HTML building blocks of the report: escaped text, embedded images, tables, folds, the page.

No JavaScript; every image is a data URI, so the page is one file. Tables wrap their cells
(``overflow-wrap: anywhere``) instead of scrolling sideways, and images scale to the column.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:1200px;margin:0 auto;padding:0 16px 48px;color:#222;line-height:1.4}
h1{font-size:24px;margin:16px 0 4px}h2{font-size:20px;border-bottom:2px solid #345;margin-top:32px}
h3{font-size:16px;margin:20px 0 6px}
nav{font-size:13px;margin:4px 0 12px}nav a{margin-right:10px}
table{border-collapse:collapse;font-size:12px;max-width:100%;margin:6px 0}
td,th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef1f4}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th{overflow-wrap:normal}
table.full{font-size:11px}table.full td.num{white-space:normal;overflow-wrap:anywhere}
tr.fail td{background:#fde8e8}tr.pass td{background:#eaf6ea}
figure{margin:8px 0}figure img{max-width:100%;height:auto;display:block;background:#000}
figcaption{font-size:12px;color:#555;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{flex:1 1 360px;max-width:100%}
.facts{display:grid;grid-template-columns:minmax(120px,max-content) 1fr;gap:2px 16px;font-size:13px}
.facts dt{font-weight:600}.facts dd{margin:0;overflow-wrap:anywhere}
details{margin:8px 0}summary{cursor:pointer;color:#246}
.prov,.note{font-size:11px;color:#666;overflow-wrap:anywhere}
.skipped{font-size:12px;color:#444}.skipped li{margin:2px 0}
"""


def esc(value: object) -> str:
    return html.escape(str(value))


def href(path: str) -> str:
    """A relative link: percent-quoted (names come from the config), then escaped for the attribute."""
    return html.escape(quote(path))


def img(path: Path | bytes, caption: str, alt: str | None = None) -> str:
    """A figure with the PNG ``path`` (or its bytes) embedded as a data URI."""
    data = base64.b64encode(path if isinstance(path, bytes) else Path(path).read_bytes()).decode()
    return (f'<figure><img alt="{esc(alt or caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def fmt(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return ""
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2g}"
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def table(df: pd.DataFrame, row_class: pd.Series | None = None, css: str = "") -> str:
    """A plain table; numbers right-aligned, 4 significant digits; ``row_class`` a CSS class per row.
    Headers may break after an underscore (``<wbr>``), so a table of many columns fits the page."""
    if df is None or not len(df.columns):
        return ""
    head = "".join(f"<th>{esc(c).replace('_', '_<wbr>')}</th>" for c in df.columns)
    body = []
    for i, (_, row) in enumerate(df.iterrows()):
        cells = []
        for c in df.columns:
            v = row[c]
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            text = esc(fmt(v))
            cells.append(f'<td class="num">{text}</td>' if num else f"<td>{text}</td>")
        rcls = f' class="{esc(row_class.iloc[i])}"' if row_class is not None and row_class.iloc[i] else ""
        body.append(f"<tr{rcls}>{''.join(cells)}</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def prov_text(prov: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in prov.items() if k != "packages")


def full_table(name: str, df: pd.DataFrame, prov: dict, rel: str, max_rows: int) -> str:
    """The whole table folded: the first ``max_rows`` rows, links to its CSV / Markdown, provenance."""
    more = f"<p class='note'>showing {max_rows} of {len(df)} rows: the CSV has all</p>" if len(df) > max_rows else ""
    link = href(f"{rel}/{name}")
    files = (f'files: <a href="{link}.csv">{esc(name)}.csv</a> · <a href="{link}.md">{esc(name)}.md</a>')
    return (f'<details id="table-{esc(name)}"><summary>full table: {esc(name)} ({len(df)} rows)</summary>'
            f"{table(df.head(max_rows).dropna(axis=1, how='all'), css='full')}{more}"
            f"<p class='prov'>{files}<br>provenance: "
            f"{esc(prov_text(prov))}</p></details>")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>' if body else ""


def page(title: str, nav: list[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><nav>{links}</nav>{body}</body></html>\n")
