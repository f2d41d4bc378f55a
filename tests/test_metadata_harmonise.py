"""Bad input: lenient mode nulls and reports, strict mode stops naming file, row, column, value."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from braing3n.metadata.harmonise import Settings, harmonise_cohort
from braing3n.metadata.issues import HarmoniseError

REPO = Path(__file__).resolve().parents[1]
MAPPING = str(REPO / "config" / "cohorts" / "phantommem.yaml")
STRICT = Settings(strict=True)
LENIENT = Settings()


@pytest.fixture
def mem(tmp_path) -> Path:
    root = tmp_path / "mem"
    shutil.copytree(REPO / "tests" / "fixtures" / "cohorts" / "phantommem", root)
    return root


def edit_clinical(root: Path, row: int, column: str, value) -> None:
    df = pd.read_csv(root / "ADNIMERGE.csv", dtype=str, keep_default_na=False)
    df.loc[row - 1, column] = value
    df.to_csv(root / "ADNIMERGE.csv", index=False)


def run(root, settings=LENIENT):
    return harmonise_cohort("phantommem", MAPPING, root, settings)


def issues(log, problem):
    return log.frame().query("problem == @problem")


def test_clean_fixture_has_no_bad_input(mem):
    df, log = run(mem)
    assert len(df) == 11 and df["subject_id"].nunique() == 3
    assert set(log.frame()["problem"]) == {"no_scan"}  # ADNIMERGE row of a subject without scans
    run(mem, STRICT)  # strict passes too: unused clinical rows are not bad input


def test_unknown_code(mem):
    edit_clinical(mem, 2, "DX", "Dementia?")
    df, log = run(mem)
    bad = df[df["session_id"] == "m12"]
    assert bad["diagnosis"].isna().all() and df["diagnosis"].notna().sum() == len(df) - len(bad)
    hit = issues(log, "unknown_code")
    assert hit[["file", "row", "column", "value", "action"]].values.tolist() == [
        ["ADNIMERGE.csv", "2", "DX", "Dementia?", "nulled"]]
    with pytest.raises(HarmoniseError, match=r"ADNIMERGE.csv:row 2: column 'DX' value 'Dementia\?': unknown code"):
        run(mem, STRICT)


@pytest.mark.parametrize("column,value,field", [("AGE", "-3", "age"), ("AGE", "130", "age"),
                                                ("MMSE", "31", "mmse")])
def test_out_of_range(mem, column, value, field):
    edit_clinical(mem, 3, column, value)
    df, log = run(mem)
    assert df.loc[df["subject_id"] == "phantommem:941_S_0002", field].isna().all()
    assert df.loc[df["subject_id"] != "phantommem:941_S_0002", field].notna().any()
    hit = issues(log, "out_of_range")
    assert len(hit) == 1 and hit.iloc[0]["row"] == "3" and hit.iloc[0]["column"] == column
    assert float(hit.iloc[0]["value"]) == float(value)
    with pytest.raises(HarmoniseError, match=rf"ADNIMERGE.csv:row 3: column '{column}' .*out of range"):
        run(mem, STRICT)


def test_duplicate_scan_id(mem):
    # sessions 'b-l' and 'bl' give the same BIDS label, hence the same scan_id.
    extra = mem / "ADNI" / "941_S_0001" / "b-l" / "941_S_0001_b-l_MPRAGE.nii.gz"
    extra.parent.mkdir(parents=True)
    extra.touch()
    df, log = run(mem)
    assert df["scan_id"].is_unique and len(df) == 11
    hit = issues(log, "duplicate_scan_id")
    original = mem / "ADNI" / "941_S_0001" / "bl" / "941_S_0001_bl_MPRAGE.nii.gz"
    # the first file in path order is kept, the other one is dropped and listed
    assert hit["action"].tolist() == ["dropped"] and hit.iloc[0]["file"] == str(original)
    assert hit.iloc[0]["value"] == "phantommem_sub-941S0001_ses-bl_T1"
    kept = df.set_index("scan_id").loc["phantommem_sub-941S0001_ses-bl_T1", "raw_path"]
    assert kept == str(extra)
    with pytest.raises(HarmoniseError, match="941_S_0001_bl_MPRAGE.nii.gz.*duplicate scan id"):
        run(mem, STRICT)


def test_two_spellings_of_one_subject_are_not_two_subjects(mem):
    # '941__S_0001' and '941_S_0001' give one label (one output folder) but would be two subjects in
    # the splits, so a session of one could land in train and a session of the other in test
    extra = mem / "ADNI" / "941__S_0001" / "m24" / "941__S_0001_m24_MPRAGE.nii.gz"
    extra.parent.mkdir(parents=True)
    extra.touch()
    df, log = run(mem)
    assert len(df) == 11 and not df["raw_path"].eq(str(extra)).any()  # the fixture's 11 scans
    assert df.loc[df["subject_id"].str.endswith("0001"), "subject_id"].unique().tolist() == ["phantommem:941_S_0001"]
    hit = issues(log, "subject_label_clash")
    assert hit["action"].tolist() == ["dropped"] and hit.iloc[0]["file"] == str(extra)
    assert hit.iloc[0]["value"] == "941__S_0001" and "941_S_0001" in hit.iloc[0]["detail"]  # path order
    with pytest.raises(HarmoniseError, match="941__S_0001_m24_MPRAGE.nii.gz.*subject label clash"):
        run(mem, STRICT)


def test_missing_column(mem):
    df = pd.read_csv(mem / "ADNIMERGE.csv", dtype=str).drop(columns=["MMSE"])
    df.to_csv(mem / "ADNIMERGE.csv", index=False)
    out, log = run(mem)
    assert out["mmse"].isna().all() and out["age"].notna().all()
    hit = issues(log, "missing_column")
    assert hit["column"].tolist() == ["MMSE"] and hit["action"].tolist() == ["nulled"]
    assert "none of the clinical tables has (ADNIMERGE.csv)" in hit.iloc[0]["detail"]  # where it looked
    with pytest.raises(HarmoniseError, match="column 'MMSE'.*missing column.*ADNIMERGE.csv"):
        run(mem, STRICT)


def test_missing_key_column_fails_in_both_modes(mem):
    df = pd.read_csv(mem / "ADNIMERGE.csv", dtype=str).rename(columns={"PTID": "SUBJECT"})
    df.to_csv(mem / "ADNIMERGE.csv", index=False)
    with pytest.raises(HarmoniseError, match="ADNIMERGE.csv: missing key column 'PTID'"):
        run(mem)


def test_missing_scan_file(mem):
    link = mem / "ADNI" / "941_S_0003" / "m24" / "941_S_0003_m24_T2.nii.gz"
    os.symlink(mem / "nowhere.nii.gz", link)  # listed by the folder, absent on disk
    df, log = run(mem)
    assert "phantommem_sub-941S0003_ses-m24_T2" not in set(df["scan_id"]) and len(df) == 11
    hit = issues(log, "missing_scan_file")
    assert hit[["file", "action"]].values.tolist() == [[str(link), "dropped"]]
    with pytest.raises(HarmoniseError, match="941_S_0003_m24_T2.nii.gz.*missing scan file"):
        run(mem, STRICT)


def test_sex_conflict_across_sessions(mem):
    edit_clinical(mem, 2, "PTGENDER", "Male")  # 941_S_0001 is Female at bl
    df, log = run(mem)
    assert df.loc[df["subject_id"] == "phantommem:941_S_0001", "sex"].isna().all()
    assert df.loc[df["subject_id"] == "phantommem:941_S_0002", "sex"].eq("M").all()
    hit = issues(log, "sex_conflict")
    assert hit[["column", "value", "action"]].values.tolist() == [["sex", "F/M", "nulled"]]
    with pytest.raises(HarmoniseError, match="column 'sex' value 'F/M': sex conflict"):
        run(mem, STRICT)


def test_every_file_is_a_row_or_a_listed_drop(mem):
    extra = mem / "ADNI" / "941S0003" / "bl" / "941S0003_bl_FLAIR.nii.gz"
    extra.parent.mkdir(parents=True)
    extra.touch()
    os.symlink(mem / "gone.nii.gz", mem / "ADNI" / "941_S_0003" / "m24" / "941_S_0003_m24_T2.nii.gz")
    n_files = sum(1 for p in mem.glob("ADNI/*/*/*.nii.gz"))
    df, log = run(mem)
    dropped = log.frame().query("action == 'dropped'")
    assert n_files == 13 and len(df) + len(dropped) == n_files


def test_unknown_mapping_key_is_named(tmp_path, mem):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(MAPPING).read_text().replace("  mmse: {column: MMSE}", "  mmse: {colum: MMSE}"))
    with pytest.raises(ValueError, match=r"bad.yaml: fields.mmse must be a mapping with keys"):
        harmonise_cohort("phantommem", str(bad), mem)


def test_bad_unit_is_named(tmp_path, mem):
    bad = tmp_path / "bad.yaml"
    text = Path(MAPPING).read_text()
    bad.write_text(text.replace("{column: EXAMDATE, unit: date}", "{column: EXAMDATE, unit: month}"))
    with pytest.raises(ValueError, match=r"bad.yaml: fields.days_from_baseline.unit 'month' is not one of"):
        harmonise_cohort("phantommem", str(bad), mem)


def test_unknown_baseline_date_does_not_make_a_later_visit_the_baseline(mem):
    edit_clinical(mem, 4, "EXAMDATE", "2012-13-45")  # 941_S_0003's baseline visit
    df, log = run(mem)
    by = df.set_index("scan_id")
    m24 = by.loc["phantommem_sub-941S0003_ses-m24_T1"]
    # counted from the m24 visit itself it would read 0 days and the baseline age 65.25
    assert pd.isna(m24["days_from_baseline"]) and pd.isna(m24["age"])
    m12 = by.loc["phantommem_sub-941S0001_ses-m12_T1"]
    assert m12["days_from_baseline"] == 370 and abs(m12["age"] - (70.5 + 370 / 365.25)) < 1e-9
    hit = issues(log, "unknown_baseline")
    assert hit["value"].tolist() == ["phantommem:941_S_0003"] and "bl" in hit.iloc[0]["detail"]
    assert issues(log, "bad_value")["row"].tolist() == ["4"]


def test_header_only_clinical_table_is_bad_input(mem):
    header = (mem / "ADNIMERGE.csv").read_text().splitlines()[0]
    (mem / "ADNIMERGE.csv").write_text(header + "\n")
    df, log = run(mem)
    assert len(df) == 11 and df["age"].isna().all() and df["sex"].isna().all()  # the scans stay
    hit = issues(log, "empty_table")
    assert hit["file"].tolist() == ["ADNIMERGE.csv"]  # relative to the cohort root, as every issue
    with pytest.raises(HarmoniseError, match="ADNIMERGE.csv.*empty table.*header but no rows"):
        run(mem, STRICT)
