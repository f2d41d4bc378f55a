"""The report page's structure on a small synthetic results tree (tests/report_tree.py): summary
first with the headline numbers beside the paper's, sections in order with their figures before
their tables, one probe row per task at its best view, skipped tasks listed once, QC pictures of
the failed and outlier scans, full tables folded with CSV links, same bytes on rebuild."""

import re
from html.parser import HTMLParser

import pytest
from report_tree import BEST, FAILED, OK_TASKS, OUTLIER, SKIPPED_TASKS, make_tree

from braing3n.report import main


class Outline(HTMLParser):
    """Section ids in order; per section the order of its <figure> / <table> / <details> starts."""

    def __init__(self):
        super().__init__()
        self.sections, self.events, self.depth_details = [], {}, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
            self.events[a["id"]] = []
        elif tag == "details":
            self.depth_details += 1
        elif tag in ("figure", "table") and self.sections:
            self.events[self.sections[-1]].append(tag + ("-folded" if self.depth_details else ""))

    def handle_endtag(self, tag):
        if tag == "details":
            self.depth_details -= 1


@pytest.fixture()
def page(tmp_path):
    cfg, root = make_tree(tmp_path)
    out = root / "report" / "index.html"
    assert main(["--configfile", str(cfg), "--out", str(out)]) == 0
    return out.read_text(), out, cfg


def _section(html: str, anchor: str) -> str:
    m = re.search(f'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert m, anchor
    return m.group(1)


def test_summary_comes_first_with_run_facts_and_headline_beside_the_paper(page):
    html, _, _ = page
    outline = Outline()
    outline.feed(html)
    assert outline.sections[:4] == ["sec-summary", "sec-honest-check", "sec-qc", "sec-data"]
    assert outline.sections.index("sec-probes") < outline.sections.index("sec-tokenizer") \
        < outline.sections.index("sec-generation") < outline.sections.index("sec-longitudinal")
    summary = _section(html, "sec-summary")
    for fact in ("1: c1", "5 preprocessed ok, 1 failed, 1 QC outliers", "6 subjects, 6 scans", "dit (dit): 3000 steps",
                 "final loss 0.25", "cfg0001", "abc123"):
        assert fact in summary, fact
    rows = re.findall(r'<tr><td><a href="#(sec-[a-z-]+)">([^<]+)</a></td><td>([^<]*)</td><td>([^<]*)</td></tr>',
                      summary)
    by_name = {name: (anchor, ours, paper) for anchor, name, ours, paper in rows}
    assert by_name["Linear probes"][0] == "sec-probes" and "21 of 23" in by_name["Linear probes"][2]
    assert "3 of 3 tasks" in by_name["Linear probes"][1]
    why = "n/a (every pair has the same interval (2 years), so r is undefined)"
    assert by_name["Longitudinal age progression"] == (
        "sec-longitudinal", f"held-out: r = 0.55 (n = 6 pairs); in-sample: r = {why} (n = 4 pairs)",
        "age progression Pearson r = 0.72")
    fid = by_name["Decomposed 3D-FID"][1]
    assert "generated vs reconstruction 5" in fid and "below reconstruction vs real in 2 of 2 arms" in fid
    assert "sex accuracy 0.85 at cfg 4.0, chance 0.50" in by_name["Guidance recovery"][1]
    assert by_name["Memorisation"][1].startswith("0 of 48 samples flagged")
    assert by_name["Honest check (planted effects)"][1].endswith("checks pass")
    # every link of the headline points at a section on the page
    assert {a for a, _, _ in by_name.values()} <= set(outline.sections)


def test_each_section_shows_its_figures_before_its_tables(page):
    html, _, _ = page
    outline = Outline()
    outline.feed(html)
    for sec in ("sec-qc", "sec-probes", "sec-tokenizer", "sec-generation"):
        ev = outline.events[sec]
        assert ev and ev[0] == "figure", (sec, ev)
        assert "table" in ev and "table-folded" in ev, (sec, ev)
    gen = _section(html, "sec-generation")
    assert gen.index('alt="per arm: a real scan') < gen.index('alt="real-data probes')  # samples before curves
    assert html.count("data:image/png;base64,") == 4 + 1 + 2  # figures, montage, failed + outlier QC pictures


def test_probes_one_row_per_task_at_its_best_view_and_skipped_tasks_listed_once(page):
    html, _, _ = page
    probes = _section(html, "sec-probes")
    short = probes[:probes.index("<details")]
    body = re.search(r"<h3>One row per task.*?<tbody>(.*?)</tbody>", short, re.S).group(1)
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", body)
    assert rows == [(t, f"{BEST[t][0]} / {BEST[t][1]}") for t in sorted(OK_TASKS)]
    assert body.count("win (p=0.004)") == 3
    skipped = re.search(r"<details class='skipped'><summary>(\d+) task\(s\) skipped.*?</details>", probes, re.S)
    assert skipped and int(skipped.group(1)) == len(SKIPPED_TASKS)
    for t in SKIPPED_TASKS:  # 3 skipped rows per task in the tables, one line on the page
        assert skipped.group(0).count(f"<b>{t}</b>") == 1
    assert "n=3 &lt; min_n 20 (T1)" in skipped.group(0)
    for name in ("probes_mae", "probes_random_vit", "encoder_comparison", "encoder_summary"):
        assert f'<a href="../tables/{name}.csv">{name}.csv</a>' in probes


def test_model_figures_open_their_sections(page):
    """`braing3n evaluate figures`' pictures: the first figure of the generation and tokenizer sections."""
    html, _, _ = page
    for anchor, alt in (("sec-generation", "per arm: a real scan of that arm, its tokenizer reconstruction"),
                        ("sec-tokenizer", "held-out scans: real | reconstruction | absolute error")):
        sec = _section(html, anchor)
        first = re.search(r'<figure><img alt="([^"]+)"', sec).group(1)
        assert first.startswith(alt), (anchor, first)
        assert sec.index("<figure>") < sec.index("<table>")


def test_a_missing_longitudinal_r_shows_as_na_with_why(page):
    html, _, _ = page
    lon = _section(html, "sec-longitudinal")
    short = lon[:lon.index("<details")]
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td><td>([^<]+)</td>", short)
    assert rows == [("held-out", "6", "0.55"),
                    ("in-sample", "4", "n/a (every pair has the same interval (2 years), so r is undefined)")]
    text = re.sub(r"data:image/png;base64,[^\"]+", "", html)
    assert not re.search(r"\bnan\b", text, re.I)


def test_qc_section_lists_counts_outliers_failed_reasons_and_their_pictures(page):
    html, _, _ = page
    qc = _section(html, "sec-qc")
    counts = re.search(r"<tbody><tr>(.*?)</tr>", qc).group(1)
    assert re.findall(r">([^<>]+)</td>", counts)[:5] == ["c1", "6", "5", "1", "1"]  # cohort, scans, ok, failed, out
    assert "HD-BET: empty brain mask" in qc and "crash-s05.txt" in qc
    assert f'alt="failed: {FAILED}"' in qc and f'alt="outlier: {OUTLIER}"' in qc
    # the failed scan left no QC picture: its raw input is drawn, 3 mid-slices (6 x 2.2 in at 80 dpi)
    import base64
    import io

    import matplotlib.image as mpimg

    fig = re.search(f'<figure><img alt="failed: {FAILED}" src="data:image/png;base64,([^"]+)">'
                    r"<figcaption>([^<]+)</figcaption>", qc)
    assert fig and "the raw input (mid-slices, voxel axes): HD-BET: empty brain mask" in fig.group(2)
    assert mpimg.imread(io.BytesIO(base64.b64decode(fig.group(1)))).shape[:2] == (176, 480)
    assert qc.index("c1: mid-axial slice") < qc.index("<table>")
    assert '<a href="../qc/c1_qc.csv">c1_qc.csv</a>' in qc


def test_rebuild_is_byte_identical_and_leftovers_stay_out(page, tmp_path):
    html, out, cfg = page
    root = out.parents[1]
    (root / "tables" / "probes_brainiac.csv").write_bytes((root / "tables" / "probes_mae.csv").read_bytes())
    (root / "qc" / "gone_qc.csv").write_bytes((root / "qc" / "c1_qc.csv").read_bytes())
    assert main(["--configfile", str(cfg), "--out", str(out)]) == 0
    assert out.read_text() == html
    assert "probes_brainiac" not in html and "gone" not in html


def test_names_from_the_config_are_escaped_in_text_and_links():
    import pandas as pd

    from braing3n.report.html import full_table

    got = full_table("probes_<b>x</b>&y", pd.DataFrame({"a": [1]}), {"seed": 0}, "../tables", 10)
    assert "<b>" not in got and "probes_&lt;b&gt;x&lt;/b&gt;&amp;y.csv" in got
    assert 'href="../tables/probes_%3Cb%3Ex%3C/b%3E%26y.csv"' in got


def test_why_no_r_follows_age_progressions_rules():
    import numpy as np
    import pandas as pd

    from braing3n.report.sections import age_r_text

    def pairs(years, change):
        return pd.DataFrame({"pairs": "held-out", "years": years, "pred_age_baseline": 50.0,
                             "pred_age_forecast": 50.0 + np.asarray(change, float)})

    row = pd.Series({"pairs": "held-out", "n_pairs": 2, "age_change_pearson_r": np.nan})
    assert age_r_text(row, pairs([1.0, 2.0], [1.0, 2.0])) == \
        "n/a (2 pair(s) with a forecast and a predicted age, r needs 3)"
    assert age_r_text(row, pairs([1.0, 2.0, 3.0, 4.0], [0.5] * 4)) == \
        "n/a (the predicted age change is the same for every pair, so r is undefined)"
    assert age_r_text(row, pairs([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, np.nan])) == \
        "n/a (2 pair(s) with a forecast and a predicted age, r needs 3)"  # rows without a number do not count
    assert age_r_text(row, None) == "n/a (2 pair(s), r needs 3)"
    assert age_r_text(pd.Series({"pairs": "held-out", "age_change_pearson_r": 0.714}), None) == "0.71"
