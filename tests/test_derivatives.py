"""The preprocessed tree as a BIDS-derivatives dataset: product names against the BIDS naming rules,
dataset_description.json / sidecars / .bidsignore from `braing3n derivatives`, and the BIDS
validator (when installed, tests/bids_validator.py) on a tree of every product name."""

import fnmatch
import json
from pathlib import Path

import bids_validator
import nibabel as nib
import numpy as np
import pytest

from braing3n import __version__
from braing3n.cli import main as cli_main
from braing3n.metadata.bids import parse_name
from braing3n.paths import BIDS_SUFFIX, Layout, product_names, scan_record_name
from braing3n.preprocess import chain, derivatives

MODALITIES = ["T1", "T2", "FLAIR", "T1c"]
# BIDS 1.9 entity order (schema rules.entities), the part a structural derivative can use
ENTITY_ORDER = ["sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "part", "space", "res", "den",
                "label", "desc"]
XFM_ORDER = ["sub", "ses", "ce", "from", "to", "mode"]  # fMRIPrep's transform names (BEP014)


def _bidsignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in derivatives.BIDSIGNORE)


def _check_bids_name(name: str) -> str:
    """The suffix of a valid structural-derivative name; AssertionError naming what is wrong."""
    f = parse_name(name)
    assert f is not None, f"{name}: not entity-value pairs + suffix"
    keys = list(f.entities)
    order = XFM_ORDER if f.suffix == "xfm" else ENTITY_ORDER
    assert set(keys) <= set(order) and keys == sorted(keys, key=order.index), f"{name}: entities {keys} out of order"
    assert keys[:2] == ["sub", "ses"], name
    if f.suffix == "xfm":
        assert f.extension == ".mat" and {"from", "to", "mode"} <= set(keys), name
    else:
        assert f.suffix in {"T1w", "T2w", "FLAIR", "mask"} and f.extension == ".nii.gz", name
    return f.suffix


def test_product_names_are_bids_derivative_names():
    seen = {}
    for m in MODALITIES:
        names = product_names("S1", "01", m)
        assert names == chain.Products("S1", "01", m).names  # one source: paths.product_names
        for key, name in names.items():
            if key == "png":  # the QC picture keeps the internal name and is .bidsignore'd
                assert name == f"sub-S1_ses-01_{m}_qc.png" and _bidsignored(name)
                continue
            seen[name] = _check_bids_name(name)
    assert product_names("S1", "01", "T1c")["volume"] == "sub-S1_ses-01_ce-gadolinium_space-SRI24_T1w.nii.gz"
    assert [product_names("S1", "01", m)["volume"] for m in ("T1", "T2", "FLAIR")] == [
        "sub-S1_ses-01_space-SRI24_T1w.nii.gz", "sub-S1_ses-01_space-SRI24_T2w.nii.gz",
        "sub-S1_ses-01_space-SRI24_FLAIR.nii.gz"]
    t1 = product_names("S1", "01", "T1")
    assert (t1["native_n4"], t1["native_brain_mask"], t1["brain_mask"]) == (
        "sub-S1_ses-01_desc-n4_T1w.nii.gz", "sub-S1_ses-01_desc-brain_mask.nii.gz",
        "sub-S1_ses-01_space-SRI24_desc-brain_mask.nii.gz")
    assert product_names("S1", "01", "T1c")["xfm"] == "sub-S1_ses-01_from-T1wCEgadolinium_to-T1w_mode-image_xfm.mat"
    assert len(seen) == 5 + 3 * 2  # T1: volume, 2 masks, n4, xfm; each other modality: volume, xfm
    assert sorted(set(seen.values())) == ["FLAIR", "T1w", "T2w", "mask", "xfm"]
    assert set(BIDS_SUFFIX) == set(MODALITIES)
    # the records, crash files and session records keep the internal names and are ignored
    for name in (scan_record_name("S1", "01", "T1c"), "sub-S1_ses-01_T1c_crash.txt", "sub-S1_ses-01_session.json"):
        assert _bidsignored(name)
    assert Layout("r").atlas_volume("c", "S1", "01", "FLAIR") == (
        "r/preprocessed/c/sub-S1/ses-01/anat/sub-S1_ses-01_space-SRI24_FLAIR.nii.gz")


def _tree(root: Path, commit: str = "abc123") -> list[str]:
    """A preprocessed tree holding every product of two sessions (tiny real NIfTIs), with records."""
    # random voxels: the validator reads a header from the first kB of the gzip stream, which a
    # tiny constant volume compresses below
    img = nib.Nifti1Image(np.random.default_rng(0).random((24, 24, 24), np.float32), np.eye(4))
    img.header.set_xyzt_units("mm")  # as ANTs writes the products
    records = []
    for subject, modalities in (("S1", MODALITIES), ("S2", ["T1"])):
        folder = root / f"sub-{subject}" / "ses-01" / "anat"
        folder.mkdir(parents=True)
        scans = []
        for m in modalities:
            for key, name in product_names(subject, "01", m).items():
                if name.endswith(".nii.gz"):
                    nib.save(img, str(folder / name))
                else:
                    (folder / name).write_bytes(b"\x89PNG" if key == "png" else b"#Insight Transform File V1.0\n")
            rec = scan_record_name(subject, "01", m)
            (folder / rec).write_text(json.dumps({"status": "ok", "git_commit": commit}))
            scans.append({"modality": m, "record": rec, "status": "ok"})
        (folder / "sub-S1_ses-01_T2_crash.txt").write_text("Traceback")
        session = folder / f"sub-{subject}_ses-01_session.json"
        session.write_text(json.dumps({"cohort": "c", "subject": subject, "session": "01", "scans": scans}))
        records.append(str(session))
    return records


def test_derivatives_command_writes_description_sidecars_and_bidsignore(tmp_path, capsys):
    root, raw = tmp_path / "preprocessed" / "c", tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "x", "DatasetDOI": "doi:10.18112/x"}))
    records = _tree(root)
    assert cli_main(["derivatives", "--root", str(root), "--cohort", "c", "--source", str(raw),
                     "--records", *records]) == 0
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc == {"Name": "BrainG3N preprocessing of c", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "braing3n", "Version": __version__,
                                     "Description": "BrainG3N preprocessing; git commit abc123"}],
                    "SourceDatasets": [{"URL": raw.resolve().as_uri(), "DOI": "doi:10.18112/x"}]}
    top = sorted(p.name for p in root.iterdir() if p.is_file())
    assert top == sorted(derivatives.top_files()) and len(top) == 2 + 5
    assert (root / ".bidsignore").read_text().split() == derivatives.BIDSIGNORE
    volume = json.loads((root / "space-SRI24_T1w.json").read_text())
    assert volume["SkullStripped"] is True and volume["SpatialReference"].startswith("https://")
    assert json.loads((root / "desc-n4_T1w.json").read_text())["SkullStripped"] is False
    # every file of the tree: a valid BIDS name or listed in .bidsignore
    for path in root.rglob("*"):
        if path.is_file() and path.parent != root:
            assert _bidsignored(path.name) or _check_bids_name(path.name)
    # a broken record: one line naming it, exit 1
    Path(records[1]).write_text("{")
    assert cli_main(["derivatives", "--root", str(root), "--cohort", "c", "--records", *records]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"braing3n derivatives: {records[1]}: not a readable record") and "\n" not in err


def test_bids_validator_accepts_the_tree(tmp_path):
    cmd = bids_validator.command()
    if cmd is None:
        pytest.skip(bids_validator.HOW)
    root = tmp_path / "preprocessed" / "c"
    assert derivatives.main(["--root", str(root), "--cohort", "c", "--source", str(tmp_path),
                             "--records", *_tree(root)]) == 0
    errors, warnings = bids_validator.validate(root, cmd, tmp_path)
    assert errors == []
    # what it still recommends: README, authors, licence, the native mask's sidecar keys
    assert {w["code"] for w in warnings} <= {"README_FILE_MISSING", "NO_AUTHORS", "TOO_FEW_AUTHORS",
                                             "JSON_KEY_RECOMMENDED", "SIDECAR_KEY_RECOMMENDED"}
    # and it does check: the old names (suffix T1, T1c) and a missing SpatialReference are errors
    folder = root / "sub-S2" / "ses-01" / "anat"
    old = folder / "sub-S2_ses-01_space-SRI24_T1.nii.gz"
    nib.save(nib.load(str(folder / "sub-S2_ses-01_space-SRI24_T1w.nii.gz")), str(old))
    (root / "space-SRI24_T2w.json").write_text(json.dumps({"SkullStripped": True}))
    errors, _ = bids_validator.validate(root, cmd, tmp_path)
    assert {(e["code"], Path(e["location"]).name) for e in errors} >= {
        ("NOT_INCLUDED", "sub-S2_ses-01_space-SRI24_T1.nii.gz"),
        ("SIDECAR_KEY_REQUIRED", "sub-S1_ses-01_space-SRI24_T2w.nii.gz")}
