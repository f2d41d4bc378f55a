"""Assemble the report page: summary, then one section per stage, in reading order."""

from __future__ import annotations

from pathlib import Path

from braing3n.evaluate.honest_check import honest_check
from braing3n.provenance import provenance, write_table
from braing3n.report import qc, sections, summary
from braing3n.report.html import page, section
from braing3n.report.tree import Tree

# (anchor, title) in page order; the headline table links to these anchors
SECTIONS = (("honest-check", "Honest check (known phantom effects)"), ("qc", "Preprocessing quality control"),
            ("data", "Data"), ("probes", "Linear probes"), ("tokenizer", "Tokenizer"),
            ("generation", "Generation: samples, guidance, 3D-FID, memorisation"),
            ("longitudinal", "Longitudinal forecasts"), ("other", "Other tables"))


def build_report(config: dict, out: str | Path) -> Path:
    tree = Tree.of(config)
    rep = config.get("report", {})
    out = Path(out)
    max_rows = int(rep.get("max_rows", 200))
    check = honest_check(tree.root / "tables", tree.reference)
    # the check is a table too: written with provenance before the page that shows it
    check_prov = provenance(config, seed=config.get("seed"), checks=len(check))
    write_table(check, out.parent / "honest_check.csv", check_prov)
    rel_root = Path(*([".."] * len(out.parent.relative_to(tree.root).parts))).as_posix() \
        if out.parent.is_relative_to(tree.root) else str(tree.root.resolve())
    ctx = sections.Ctx(tree, rel_root, max_rows, set())
    bodies = {"honest-check": sections.honest_section(check, check_prov),
              "qc": qc.qc_section(tree, rel_root, max_rows),
              "data": sections.data_section(ctx),
              "probes": sections.probes_section(ctx),
              "tokenizer": sections.tokenizer_section(ctx),
              "generation": sections.generation_section(ctx),
              "longitudinal": sections.longitudinal_section(ctx)}
    bodies["other"] = sections.other_section(ctx)  # last: whatever no section showed
    facts = summary.facts_html(summary.run_facts(tree, check, check_prov))
    head = summary.headline_html(summary.headline(tree, check))
    parts = [section("sec-summary", "Summary", f"{facts}<h3>Headline numbers</h3>{head}")]
    parts += [section(f"sec-{a}", t, bodies[a]) for a, t in SECTIONS]
    nav = [("sec-summary", "Summary")] + [(f"sec-{a}", t.split(" (")[0].split(":")[0]) for a, t in SECTIONS
                                          if bodies[a]]
    html = page(rep.get("title", "BrainG3N evaluation report"), nav, "".join(parts))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(".tmp." + out.name)
    tmp.write_text(html)
    tmp.replace(out)
    return out
