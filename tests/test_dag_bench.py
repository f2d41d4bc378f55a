"""The DAG benchmark's synthetic setup and dry-run parsing (the timed run itself is `make bench`)."""

from __future__ import annotations

import numpy as np
import yaml

from braing3n.bench.dag import PAPER_SCANS, parse_dryrun, synth_scans, time_discovery, write_results, write_setup
from braing3n.metadata.mapping import load_cohort_mapping


def test_paper_sized_manifest_shape():
    scans = synth_scans(PAPER_SCANS, seed=0)
    assert len(scans) == PAPER_SCANS
    assert scans.cohort.nunique() == 18
    assert set(scans.modality) == {"T1", "T2", "FLAIR", "T1c"}
    assert not scans.duplicated(["cohort", "subject", "session", "modality"]).any()
    per_subject = scans.drop_duplicates(["cohort", "subject", "session"]).groupby(["cohort", "subject"]).size()
    assert 12_000 < len(per_subject) < 20_000          # paper: 17,399 subjects
    assert 3_000 < (per_subject > 1).sum() < 8_000     # paper: 6,576 with follow-ups
    # every session has its T1 (other modalities are registered through it)
    sessions = scans.groupby(["cohort", "subject", "session"]).modality.apply(set)
    assert all("T1" in m for m in sessions)
    assert synth_scans(PAPER_SCANS, seed=0).equals(scans)  # seeded


def test_small_setup_is_discoverable(tmp_path):
    scans = synth_scans(300, seed=1)
    assert len(scans) == 300
    config_path = write_setup(scans, tmp_path)
    config = yaml.safe_load(config_path.read_text())
    assert set(config["cohorts"]) == set(scans.cohort)
    for spec in config["cohorts"].values():
        load_cohort_mapping(spec["mapping"])  # valid for the metadata stage
    seconds, found = time_discovery(config_path)
    assert found == 300 and seconds >= 0


DRYRUN = """Building DAG of jobs...
Job stats:
job                    count
-------------------  -------
all                        1
harmonise                  2
preprocess_modality        3
preprocess_t1              4
total                     10

[Fri Nov 27 18:00:00 2026] Group job preprocess (jobs in lexicogr. order):

    [Fri Nov 27 18:00:00 2026]
    rule preprocess_t1:
        output: a

    [Fri Nov 27 18:00:00 2026]
    rule preprocess_modality:
        output: b

[Fri Nov 27 18:00:00 2026] Group job preprocess (jobs in lexicogr. order):

    [Fri Nov 27 18:00:00 2026]
    rule preprocess_t1:
        output: c

[Fri Nov 27 18:00:00 2026]
rule harmonise:
    output: d

[Fri Nov 27 18:00:00 2026]
rule harmonise:
    output: e

[Fri Nov 27 18:00:00 2026]
localrule all:
    input: d, e
Job stats:
"""


def test_parse_dryrun_counts_groups_and_submissions():
    dag = parse_dryrun(DRYRUN)
    assert dag["jobs"] == 10
    assert dag["per_rule"] == {"all": 1, "harmonise": 2, "preprocess_modality": 3, "preprocess_t1": 4}
    assert dag["group_jobs"] == 2
    assert dag["submissions"] == 4  # 2 groups + 2 harmonise; `all` is local
    assert dag["local_jobs"] == 1


def test_results_keep_counts_as_integers(tmp_path):
    rows = [("scans", PAPER_SCANS, ""), ("jobs", np.int64(35_427), "jobs in the DAG"),
            ("dryrun_cpu_seconds", 87.856, "user + system CPU")]
    table = write_results(rows, tmp_path, {"seed": 0, "packages": "snakemake=9"})
    assert list(table.value) == ["35309", "35427", "87.86"]
    md = (tmp_path / "dag.md").read_text()
    assert "| 35309 " in md and "| 35427 " in md and "| 87.86 " in md
    assert "e+04" not in md
    assert "Provenance: seed=0" in md and "Packages: snakemake=9" in md
    csv_rows = [line for line in (tmp_path / "dag.csv").read_text().splitlines() if not line.startswith("#")]
    assert csv_rows[1:] == ["scans,35309,", "jobs,35427,jobs in the DAG", "dryrun_cpu_seconds,87.86,user + system CPU"]
    assert not list(tmp_path.glob("*.tmp"))
