"""A BIDS dataset built on the fly from real scans (../shared/data): two IXI heads and the TCGA
patient's four modalities (T1w, ce-gadolinium T1w, T2w, FLAIR) with participants.tsv, pointed at
with `mapping: bids` and nothing else, run through Snakemake: preprocessing of its 3 sessions, the
QC table, harmonisation and the BIDS-derivatives dataset_description (validated when the BIDS
validator is installed, tests/bids_validator.py). ~4-6 core-min: one run in a module fixture."""

import json
import os
import subprocess
import sys
from pathlib import Path

import bids_validator
import pandas as pd
import pytest
import yaml

from braing3n.paths import Layout, product_names, scan_record_name

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
IXI = {"IXI132-HH-1415": "IXI132", "IXI174-HH-1571": "IXI174"}  # raw name -> BIDS label
TCGA = {"t1": "T1w", "t1c": "ce-gadolinium_T1w", "t2": "T2w", "flair": "FLAIR"}
EXPECTED = {("IXI132", "T1"), ("IXI174", "T1"), ("TCGA6692", "T1"), ("TCGA6692", "T1c"), ("TCGA6692", "T2"),
            ("TCGA6692", "FLAIR")}


def build_bids(shared: Path, root: Path) -> None:
    """sub-<label>/ses-01/anat/ links to the real scans, participants.tsv from IXI's table (n/a for TCGA)."""
    for raw, label in IXI.items():
        anat = root / f"sub-{label}" / "ses-01" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{label}_ses-01_T1w.nii.gz").symlink_to(shared / "ixi-t1-2mm" / f"{raw}_T1.nii.gz")
        (anat / f"sub-{label}_ses-01_T1w.json").write_text(json.dumps({"MagneticFieldStrength": 1.5,
                                                                       "Manufacturer": "Philips"}))
    anat = root / "sub-TCGA6692" / "ses-01" / "anat"
    anat.mkdir(parents=True)
    for raw, suffix in TCGA.items():
        (anat / f"sub-TCGA6692_ses-01_{suffix}.nii.gz").symlink_to(shared / "tcga-fg-6692" / f"{raw}.nii.gz")
    # a file BIDS discovery must skip (with its reason), not take as a scan
    mask = shared / "tcga-fg-6692" / "t1c_brainmask_hdbet.nii.gz"
    (anat / "sub-TCGA6692_ses-01_desc-brain_mask.nii.gz").symlink_to(mask)
    ixi = pd.read_csv(shared / "ixi-t1-2mm" / "participants.csv").set_index("MRID")
    rows = [f"sub-{label}\t{ixi.loc[raw, 'Age']}\t{ixi.loc[raw, 'Sex']}" for raw, label in IXI.items()]
    rows.append("sub-TCGA6692\tn/a\tn/a")
    (root / "participants.tsv").write_text("participant_id\tage\tsex\n" + "\n".join(rows) + "\n")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "braing3n test", "BIDSVersion": "1.9.0",
                                                               "DatasetDOI": "doi:10.0000/braing3n-test"}))


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bidsreal")
    raw, results = tmp / "raw", tmp / "results"
    build_bids(shared_data, raw)
    config = {"results": str(results), "seed": 0, "device": "cpu",
              "cohorts": {"bidsreal": {"mapping": "bids", "root": str(raw)}},
              "preprocess": {"threads": 1, "hdbet": {"mode": "fast", "device": "cpu"}}}
    cfg = tmp / "bidsreal.yaml"
    cfg.write_text(yaml.safe_dump(config))
    lay = Layout(str(results))
    targets = [f"{lay.derivatives_root('bidsreal')}/dataset_description.json", lay.qc_table("bidsreal"),
               lay.metadata_partition("bidsreal")]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    out = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(REPO), "--configfile", str(cfg),
                          "--cores", "2", *targets], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp, raw, lay


def test_every_scan_is_preprocessed_under_its_bids_name(run):
    _, raw, lay = run
    qc = pd.read_parquet(lay.qc_table("bidsreal"))
    assert set(zip(qc["subject"], qc["modality"], strict=True)) == EXPECTED and len(qc) == len(EXPECTED)
    assert (qc["status"] == "ok").all(), qc[["scan_id", "reason"]].to_string()
    for subject, modality in EXPECTED:
        folder = Path(lay.scan_dir("bidsreal", subject, "01"))
        rec = json.loads((folder / scan_record_name(subject, "01", modality)).read_text())
        assert rec["status"] == "ok" and rec["outputs"]["volume"] == product_names(subject, "01", modality)["volume"]
        assert (folder / rec["outputs"]["volume"]).stat().st_size > 100_000
        assert rec["input"].startswith(str(raw))
    tcga = Path(lay.scan_dir("bidsreal", "TCGA6692", "01"))
    assert (tcga / "sub-TCGA6692_ses-01_ce-gadolinium_space-SRI24_T1w.nii.gz").exists()
    assert not list(tcga.glob("*_space-SRI24_T1c.nii.gz")) and not list(tcga.glob("*_space-SRI24_T1.nii.gz"))


def test_harmonised_rows_and_skipped_files(run):
    tmp, raw, lay = run
    df = pd.read_parquet(lay.metadata_partition("bidsreal"))
    assert len(df) == len(EXPECTED)
    t1 = df[df["modality"] == "T1"].set_index("subject_id")
    ages = t1["age"].to_dict()
    assert ages["bidsreal:IXI132"] == pytest.approx(58.72) and ages["bidsreal:IXI174"] == pytest.approx(63.1)
    assert pd.isna(ages["bidsreal:TCGA6692"])  # n/a in participants.tsv
    assert t1.loc["bidsreal:IXI174", "sex"] == "F" and t1.loc["bidsreal:IXI132", "field_strength"] == 1.5
    issues = pd.read_csv(Path(lay.root) / "metadata" / "issues" / "bidsreal.csv")
    skipped = issues[issues["problem"] == "skipped_scan"]
    assert len(skipped) == 1 and skipped.iloc[0]["file"].endswith("sub-TCGA6692_ses-01_desc-brain_mask.nii.gz")
    assert skipped.iloc[0]["detail"].startswith("suffix 'mask' is not a structural input")


def test_preprocessed_tree_is_a_bids_derivatives_dataset(run):
    tmp, raw, lay = run
    root = Path(lay.derivatives_root("bidsreal"))
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "braing3n"
    assert "git commit" in desc["GeneratedBy"][0]["Description"]
    assert desc["SourceDatasets"] == [{"URL": raw.resolve().as_uri(), "DOI": "doi:10.0000/braing3n-test"}]
    cmd = bids_validator.command()
    if cmd is None:
        pytest.skip(bids_validator.HOW)
    errors, _ = bids_validator.validate(root, cmd, tmp)
    assert errors == []
