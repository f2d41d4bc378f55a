"""The generic `bids` mapping over the six real BIDS layouts of shared/data/bids-examples.

Every NIfTI in an anat folder is either chosen (a harmonised row) or listed as skipped with why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from braing3n.metadata.discover import discover_scans, load_mapping, mapping_path
from braing3n.metadata.harmonise import Settings, harmonise_cohort
from braing3n.metadata.issues import HarmoniseError

EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bids-examples"
pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"{EXAMPLES} absent (shared test data)")

# dataset -> (chosen scans, skipped anat files, sessions per subject)
COUNTS = {"ds114": (20, 0, 2), "7t_trt": (22, 22, 1), "genetics_ukbb": (28, 0, 1), "ds051": (13, 28, 1),
          "ds004332": (5, 53, 1), "qmri_mp2rage": (0, 7, 0)}


def anat_niftis(root: Path) -> set[str]:
    return {str(p) for p in root.glob("sub-*/**/anat/*") if p.name.endswith((".nii", ".nii.gz"))}


@pytest.mark.parametrize("name", list(COUNTS))
def test_every_anat_file_is_chosen_or_skipped_with_why(name):
    root = EXAMPLES / name
    skipped: list = []
    refs = discover_scans(name, load_mapping("bids"), root, skipped=skipped)
    chosen = {r.path for r in refs}
    assert (len(chosen), len(skipped)) == COUNTS[name][:2]
    assert chosen | {p for p, _ in skipped} == anat_niftis(root) and not chosen & {p for p, _ in skipped}
    assert all(reason for _, reason in skipped)
    keys = [(r.subject, r.session, r.modality) for r in refs]
    assert len(keys) == len(set(keys))  # one scan per modality and session


def test_choice_rules_and_reasons():
    skipped: list = []
    refs = discover_scans("d", load_mapping("bids"), EXAMPLES / "ds051", skipped=skipped)
    assert all("_run-01_T1w" in r.path for r in refs)  # lowest run is chosen
    why = dict((Path(p).name, r) for p, r in skipped)
    assert "sub-07_run-01_T1w.nii.gz" in why["sub-07_run-03_T1w.nii.gz"]
    assert why["sub-01_run-01_inplaneT2.nii.gz"].startswith("suffix 'inplaneT2' is not a structural input")
    skipped = []
    discover_scans("q", load_mapping("bids"), EXAMPLES / "qmri_mp2rage", skipped=skipped)
    why = dict((Path(p).name, r) for p, r in skipped)
    assert why["sub-1_inv-1_part-phase_MP2RAGE.nii"].startswith("suffix 'MP2RAGE'")
    assert "'T1map'" in why["sub-1_T1map.nii"] and "'UNIT1'" in why["sub-1_UNIT1.nii"]
    prefer = {**load_mapping("bids"), "scans": {"layout": "bids", "prefer": ["run-02"]}}
    assert all("_run-02_T1w" in r.path for r in discover_scans("d", prefer, EXAMPLES / "ds051"))


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("name", list(COUNTS))
def test_harmonise_bids_examples(name, strict):
    root = EXAMPLES / name
    n_chosen, n_skipped, n_sessions = COUNTS[name]
    if n_chosen == 0:
        with pytest.raises(HarmoniseError, match=r"7 anat files skipped: none is a T1w, T2w or FLAIR"):
            harmonise_cohort(name, "bids", root, Settings(strict=strict))
        return
    df, log = harmonise_cohort(name, "bids", root, Settings(strict=strict))
    assert len(df) == n_chosen
    assert (df.groupby("subject_id")["session_id"].nunique() == n_sessions).all()
    issues = log.frame()
    assert (issues["problem"] == "skipped_scan").sum() == n_skipped
    if name == "genetics_ukbb":  # participants.tsv age/sex, "89+" -> 89; top-level sidecars
        s05 = df[df["subject_id"] == "genetics_ukbb:05"]
        assert s05["age"].tolist() == [89.0, 89.0] and s05["sex"].tolist() == ["M", "M"]
        assert set(df["field_strength"]) == {3.0} and set(df["scanner_vendor"]) == {"Siemens"}
        assert set(df["session_id"]) == {"01"}
    if name == "ds004332":  # per-scan sidecars next to uncompressed .nii
        assert set(df["site"]) == {"Rigshospitalet"} and set(df["field_strength"]) == {3.0}
    if name == "7t_trt":  # sex from participants.tsv; sessions.tsv rows of ses-2 (no anat) are unused
        assert df["sex"].notna().all() and (issues["problem"] == "no_scan").sum() == 22


def test_mapping_name_resolves_and_unknown_name_is_one_line():
    assert Path(mapping_path("bids")).name == "bids.yaml"
    with pytest.raises(ValueError, match=r"cohort mapping 'nosuch' is neither a file nor a shipped mapping name"):
        load_mapping("nosuch")


def test_parse_time_check_of_a_bids_cohort_without_its_optional_tables(tmp_path):
    """participants.tsv and sessions.tsv are optional in the bids mapping: their absence is no
    config error (it used to be "none of the clinical spreadsheets"); no T1 still is one."""
    from braing3n.config import ConfigError, check_cohort
    from braing3n.metadata.mapping import load_cohort_mapping

    mapping = load_cohort_mapping("bids")
    anat = tmp_path / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (anat / "sub-01_T2w.nii.gz").write_bytes(b"")
    spec = {"mapping": "bids", "root": str(tmp_path)}
    scans = discover_scans("c", mapping, tmp_path)
    with pytest.raises(ConfigError, match=r"^config: cohorts\.c: 1 scans under .* but no T1 in any session"):
        check_cohort("c", spec, mapping, scans)
    (anat / "sub-01_T1w.nii.gz").write_bytes(b"")
    scans = discover_scans("c", mapping, tmp_path)
    assert [(s.subject, s.session, s.modality) for s in scans] == [("01", "01", "T1"), ("01", "01", "T2")]
    assert not (tmp_path / "participants.tsv").exists()
    check_cohort("c", spec, mapping, scans)  # no error
    # a mapping whose table is required still gets its one line
    required = {**mapping, "tables": [{**mapping["tables"][0], "optional": False}]}
    with pytest.raises(ConfigError, match=r"none of the clinical spreadsheets of bids is under"):
        check_cohort("c", spec, required, scans)
