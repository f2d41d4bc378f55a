"""Manifest, longitudinal pairs, dataset summary and the two CLIs end to end (fixtures only)."""

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from braing3n.metadata import cli as harmonise_cli
from braing3n.metadata import manifest as manifest_cli
from braing3n.metadata.harmonise import harmonise_cohort, read_partitions, write_partition
from braing3n.metadata.manifest import coverage_table, dataset_summary, longitudinal_pairs
from braing3n.metadata.schema import ARROW_SCHEMA

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "cohorts"


@pytest.fixture(scope="module")
def mem() -> pd.DataFrame:
    return harmonise_cohort("phantommem", str(REPO / "config/cohorts/phantommem.yaml"), FIX / "phantommem")[0]


@pytest.fixture(scope="module")
def onc() -> pd.DataFrame:
    return harmonise_cohort("phantomonc", str(REPO / "config/cohorts/phantomonc.yaml"), FIX / "phantomonc")[0]


def test_pairs(mem):
    pairs = longitudinal_pairs(mem).set_index("subject_id")
    assert sorted(pairs.index) == ["phantommem:941_S_0001", "phantommem:941_S_0003"]
    a = pairs.loc["phantommem:941_S_0001"]
    assert (a["baseline_session"], a["followup_session"]) == ("bl", "m12")
    # EXAMDATE 2010-01-15 -> 2011-01-20: 370 days; AGE (at baseline) 70.5 + 370 / 365.25
    assert a["interval_days"] == 370 and a["interval_years"] == pytest.approx(370 / 365.25)
    assert (a["age_baseline"], a["age_followup"]) == pytest.approx((70.5, 70.5 + 370 / 365.25))
    assert (a["diagnosis_baseline"], a["diagnosis_followup"]) == ("HC", "MCI")
    assert a["baseline_scan_id_T1"] == "phantommem_sub-941S0001_ses-bl_T1"
    assert a["followup_scan_id_FLAIR"] == "phantommem_sub-941S0001_ses-m12_FLAIR"
    assert a["baseline_scan_id_T2"] is None
    assert pairs.loc["phantommem:941_S_0003", "interval_days"] == 731  # 2012-06-30 -> 2014-07-01


def test_pairs_all_session_combinations(mem):
    third = mem[mem["session_id"] == "m12"].assign(
        session_id="m24", days_from_baseline=730.5,
        scan_id=lambda d: d["scan_id"].str.replace("ses-m12", "ses-m24"))
    pairs = longitudinal_pairs(pd.concat([mem, third], ignore_index=True))
    one = pairs[pairs["subject_id"] == "phantommem:941_S_0001"]
    assert sorted(zip(one["baseline_session"], one["followup_session"], strict=True)) == [
        ("bl", "m12"), ("bl", "m24"), ("m12", "m24")]
    assert sorted(one["interval_days"]) == [360.5, 370.0, 730.5]


def test_summary_and_coverage(mem, onc):
    both = pd.concat([mem, onc], ignore_index=True)
    s = dataset_summary(both).set_index(["cohort", "diagnosis", "modality"])
    assert s.loc[("phantommem", "PD", "T1"), ["n_scans", "n_subjects", "n_sessions"]].tolist() == [2, 1, 2]
    assert s.loc[("phantomonc", "GBM", "T1c"), "n_scans"] == 2
    assert ("phantomonc", "glioma_other", "T2") not in s.index  # UCSF-PDGM-0007 has no T2 in the fixture
    assert s.loc[("phantommem", "all", "all"), ["n_scans", "n_subjects", "n_longitudinal_subjects"]].tolist() == [
        11, 3, 2]
    assert s.loc[("all", "all", "all"), ["n_scans", "n_subjects"]].tolist() == [22, 6]
    assert s.loc[("all", "GBM", "all"), ["n_scans", "n_subjects"]].tolist() == [8, 2]
    assert s.loc[("all", "all", "T1c"), "n_scans"] == 3 and s.loc[("all", "all", "T1"), "n_scans"] == 8
    c = coverage_table(both).set_index("cohort")
    assert c.loc["phantommem", "mmse"] == pytest.approx(100 * 9 / 11, abs=0.01)
    assert c.loc["phantomonc", "mgmt"] == pytest.approx(100 * 8 / 11, abs=0.01)
    assert c.loc["all", "age"] == 100.0 and c.loc["phantommem", "idh1"] == 0.0


def test_read_partitions_rejects_a_scan_in_two_partitions(tmp_path, mem):
    write_partition(mem, tmp_path / "a.parquet")
    write_partition(mem.iloc[:2], tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="is in more than one partition"):
        read_partitions([tmp_path / "a.parquet", tmp_path / "b.parquet"])


def test_cli_end_to_end(tmp_path):
    roots = {}
    for c in ("phantommem", "phantomonc"):
        roots[c] = tmp_path / "raw" / c
        shutil.copytree(FIX / c, roots[c])
    cfg = {"results": str(tmp_path / "res"), "seed": 3,
           "cohorts": {c: {"mapping": str(REPO / f"config/cohorts/{c}.yaml"), "root": str(r)}
                       for c, r in roots.items()},
           "metadata": {"val_fraction": 0.3, "test_fraction": 0.3}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    args = ["--configfile", str(tmp_path / "cfg.yaml")]
    for c in roots:
        assert harmonise_cli.main([*args, "--cohort", c]) == 0
    res = tmp_path / "res"
    part = res / "metadata" / "cohort=phantommem" / "part-0.parquet"
    first = part.read_bytes()
    table = pq.read_table(part)
    assert table.schema.equals(ARROW_SCHEMA, check_metadata=False)
    assert b"braing3n_provenance" in table.schema.metadata
    issues = (res / "metadata" / "issues" / "phantommem.csv").read_text()
    assert "no_scan,unused,ADNIMERGE.csv,6" in issues and "# provenance:" in issues
    # re-harmonising one cohort rewrites only its partition, byte-identical
    onc_part = res / "metadata" / "cohort=phantomonc" / "part-0.parquet"
    onc_mtime = onc_part.stat().st_mtime_ns
    assert harmonise_cli.main([*args, "--cohort", "phantommem"]) == 0
    assert part.read_bytes() == first and onc_part.stat().st_mtime_ns == onc_mtime
    parts = sorted(str(p) for p in res.glob("metadata/cohort=*/part-0.parquet"))
    assert manifest_cli.main([*args, "--partitions", *parts]) == 0
    man = pd.read_parquet(res / "metadata" / "manifest.parquet")
    assert len(man) == 22 and man["scan_id"].is_unique
    assert (man.groupby("subject_id")["split"].nunique() == 1).all()
    # strata of 1-2 subjects: the GBM pair gives one test subject, singletons stay in train
    assert man.drop_duplicates("subject_id")["split"].value_counts().to_dict() == {"train": 5, "test": 1}
    pairs = pd.read_parquet(res / "metadata" / "pairs.parquet")
    assert len(pairs) == 2 and pairs["baseline_scan_id_T1c"].isna().all()
    assert str(pq.read_schema(res / "metadata" / "pairs.parquet").field("baseline_scan_id_T1c").type) == "string"
    summary = (res / "tables" / "dataset_summary.csv").read_text()
    assert summary.splitlines()[0].startswith("cohort,diagnosis,modality,n_scans,n_subjects")
    assert (res / "tables" / "dataset_summary.md").is_file() and (res / "tables" / "dataset_coverage.csv").is_file()


def test_cli_strict_failure_is_one_line_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "mem"
    shutil.copytree(FIX / "phantommem", root)
    text = (root / "ADNIMERGE.csv").read_text().replace("Dementia", "Demented")
    (root / "ADNIMERGE.csv").write_text(text)
    out = tmp_path / "p.parquet"
    rc = harmonise_cli.main(["--cohort", "phantommem", "--mapping", str(REPO / "config/cohorts/phantommem.yaml"),
                             "--root", str(root), "--out", str(out), "--issues", str(tmp_path / "i.csv"),
                             "--strict"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "ADNIMERGE.csv:row 3: column 'DX' value 'Demented': unknown code" in err
    assert not out.exists() and not (tmp_path / "i.csv").exists()


def test_ixi_mapping_on_real_ixi_folder(shared_data):
    root = shared_data / "ixi-t1-2mm"
    df, log = harmonise_cohort("IXI", str(REPO / "config/cohorts/ixi.yaml"), root)
    truth = pd.read_csv(root / "participants.csv")
    assert len(df) == len(list(root.glob("IXI*_T1.nii.gz"))) == 20
    assert set(df["modality"]) == {"T1"} and df["diagnosis"].eq("HC").all()
    got = df.assign(MRID=df["subject_id"].str.removeprefix("IXI:")).merge(truth, on="MRID")
    assert len(got) == 20
    assert (got["age"] - got["Age"]).abs().max() < 1e-9 and (got["sex"] == got["Sex"]).all()
    assert set(got["site"]) == {"HH"} and got["field_strength"].eq(3.0).all()
    assert not set(log.frame()["problem"]) & {"unknown_code", "out_of_range", "missing_column"}
