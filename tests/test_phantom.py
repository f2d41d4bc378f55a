"""Phantom cohorts: plan == files on disk, determinism, truth geometry, planted effects, spreadsheets."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage as ndi

from braing3n import atlas as atlas_mod
from braing3n.cli import main as cli
from braing3n.config import validate_config
from braing3n.metadata.discover import discover_scans, load_mapping
from braing3n.phantom import anatomy, tissues
from braing3n.phantom.plan import plan_cohort

REPO = Path(__file__).resolve().parents[1]
ADNI_COLUMNS = ["RID", "PTID", "VISCODE", "EXAMDATE", "AGE", "PTGENDER", "DX", "MMSE", "CDRSB", "APOE4", "SITE",
                "MANUFACTURER", "FLDSTRENG"]
UCSF_COLUMNS = ["ID", "Sex", "Age at MRI", "WHO CNS Grade", "Final pathologic diagnosis (WHO 2021)", "MGMT status",
                "IDH", "1p/19q", "Scanner"]


def _config(root: Path, seed: int = 0) -> dict:
    return {
        "results": str(root / "results"),
        "phantom": {"seed": seed},
        "cohorts": {
            "phantommem": {"mapping": str(REPO / "config/cohorts/phantommem.yaml"), "root": str(root / "mem"),
                           "phantom": {"style": "adni", "n_subjects": 3, "n_longitudinal": 1, "n_sites": 2,
                                       "diagnoses": {"HC": 1, "AD": 1, "PD": 1}, "modalities": {"T1": 1.0},
                                       "voxel_sizes": {"2": 0.7, "1x1x4": 0.3}}},
            "phantomonc": {"mapping": str(REPO / "config/cohorts/phantomonc.yaml"), "root": str(root / "onc"),
                           "phantom": {"style": "ucsfpdgm", "n_subjects": 2, "n_sites": 1,
                                       "voxel_sizes": {"2": 1.0}}},
        },
    }


def _write_config(root: Path, seed: int = 0) -> tuple[Path, dict]:
    root.mkdir(parents=True, exist_ok=True)
    cfg = _config(root, seed)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, validate_config(cfg)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    cfg_path, cfg = _write_config(root)
    plans = {}
    for name in ("phantommem", "phantomonc"):
        assert cli(["phantom", "--configfile", str(cfg_path), "--cohort", name]) == 0
        plans[name] = plan_cohort(name, cfg["cohorts"][name], cfg)
    return root, cfg, plans


def _truth(plan, ref) -> dict:
    stem = f"sub-{ref.subject}_ses-{ref.session}_{ref.modality}"
    return json.loads((Path(plan.root) / "derivatives/truth" / f"{stem}_truth.json").read_text())


def _load(path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(path)
    return np.asanyarray(img.dataobj), img


def test_plan_is_exactly_what_is_written_and_discovered(cohorts):
    root, cfg, plans = cohorts
    for name, plan in plans.items():
        on_disk = {str(p) for p in Path(plan.root).rglob("*") if p.is_file()}
        # truth.csv gets a Markdown twin from write_table only when markdown=True; the plan lists every file.
        assert on_disk == set(plan.files), name
        found = discover_scans(name, load_mapping(cfg["cohorts"][name]["mapping"]), plan.root)
        assert found == plan.scans
    mem = plans["phantommem"]
    assert len({s.session for s in mem.scans}) == 2  # baseline + one follow-up visit
    assert {s.modality for s in plans["phantomonc"].scans} == {"T1", "T1c", "T2", "FLAIR"}
    assert all(s.path.startswith(mem.root) for s in mem.scans)


def test_plan_is_deterministic_and_cheap(cohorts):
    root, cfg, plans = cohorts
    again = plan_cohort("phantommem", cfg["cohorts"]["phantommem"], cfg)
    assert again.scans == plans["phantommem"].scans and again.files == plans["phantommem"].files
    other = dict(cfg, phantom=dict(cfg["phantom"], seed=5))
    assert plan_cohort("phantommem", cfg["cohorts"]["phantommem"], other).scans != plans["phantommem"].scans


def test_same_seed_same_bytes_other_seed_differs(cohorts, tmp_path):
    root, cfg, plans = cohorts
    plan = plans["phantommem"]
    sub = plan.subjects[0]
    cfg_path, _ = _write_config(tmp_path / "same")
    assert cli(["phantom", "--configfile", str(cfg_path), "--cohort", "phantommem",
                "--subjects", sub.subject_raw]) == 0
    for ses in sub.sessions:
        for sc in ses.scans:
            for rel in [Path(sc.ref.path).relative_to(plan.root), *sc.truth_files]:
                a = (Path(plan.root) / rel).read_bytes()
                b = (tmp_path / "same/mem" / rel).read_bytes()
                assert a == b, rel
    cfg_path, cfg2 = _write_config(tmp_path / "other", seed=1)
    plan2 = plan_cohort("phantommem", cfg2["cohorts"]["phantommem"], cfg2)
    assert cli(["phantom", "--configfile", str(cfg_path), "--cohort", "phantommem",
                "--subjects", plan2.subjects[0].subject_raw]) == 0
    img2, _ = _load(plan2.scans[0].path) if plan2.scans[0].subject == plan2.subjects[0].subject else _load(
        next(s.path for s in plan2.scans if s.subject == plan2.subjects[0].subject))
    img1, _ = _load(plan.scans[0].path)
    assert img1.shape != img2.shape or not np.array_equal(img1, img2)


def test_geometry_orientation_voxels_and_truth_affine(cohorts):
    root, cfg, plans = cohorts
    atlas_mask = np.asanyarray(nib.load(atlas_mod.atlas_paths().brain_mask).dataobj).astype(np.float32)
    for plan in plans.values():
        for sub, _ses, sc in plan.scan_plans():
            data, img = _load(sc.ref.path)
            assert "".join(nib.aff2axcodes(img.affine)) == sc.orientation
            assert np.allclose(img.header.get_zooms()[:3], sc.voxel_size)
            assert data.dtype == np.dtype(sc.dtype)
            truth = _truth(plan, sc.ref)
            assert truth["orientation"] == sc.orientation and truth["diagnosis"] == sub.diagnosis
            mask, mimg = _load(Path(plan.root) / truth["brainmask"])
            assert mask.shape == data.shape and np.allclose(mimg.affine, img.affine)
            # Atlas brain mask pushed through the truth affine onto the native grid ~ true native mask.
            a2n = np.asarray(truth["atlas_to_native"])
            to_atlas = np.linalg.inv(atlas_mod.AFFINE) @ np.linalg.inv(a2n) @ img.affine
            ijk = np.indices(data.shape).reshape(3, -1)
            pts = to_atlas[:3, :3] @ ijk + to_atlas[:3, 3:4]
            warped = ndi.map_coordinates(atlas_mask, pts, order=0).reshape(data.shape) > 0
            true = mask > 0
            dice = 2 * (warped & true).sum() / (warped.sum() + true.sum())
            assert dice > 0.9, (sc.ref.scan_id, dice)
            bias, _ = _load(Path(plan.root) / truth["bias"])
            assert bias.shape == data.shape and 0.3 < bias.min() and bias.max() < 3.0


def test_age_widens_csf_and_ventricles():
    vols = [anatomy.session_anatomy(None, {"sulcal_mm": 0.022 * (a - 40), "ventricle_mm": 0.06 * (a - 40),
                                           "medial_temporal_mm": 0.0}, 0).volumes_ml() for a in (45, 65, 90)]
    csf = [v["csf"] for v in vols]
    vent = [v["ventricles"] for v in vols]
    gm = [v["gm"] for v in vols]
    assert csf[0] < csf[1] < csf[2] and gm[0] > gm[1] > gm[2]
    assert vent[2] > 2.0 * vent[0]  # ventricles more than double between 45 and 90
    assert 0.08 < (gm[0] - gm[2]) / gm[0] < 0.3  # plausible grey-matter loss, not a hollowed brain


def test_followup_has_more_csf_than_baseline(cohorts):
    root, cfg, plans = cohorts
    plan = plans["phantommem"]
    sub = next(s for s in plan.subjects if len(s.sessions) > 1)
    base, follow = (sub.sessions[0].scans[0], sub.sessions[-1].scans[0])
    tb, tf = _truth(plan, base.ref), _truth(plan, follow.ref)
    assert tf["age"] > tb["age"] + 0.9
    assert tf["volumes_ml"]["csf"] > tb["volumes_ml"]["csf"]
    assert tf["volumes_ml"]["ventricles"] > tb["volumes_ml"]["ventricles"]
    # Same in the native truth labels (different grids and poses): CSF volume in ml.
    csf_ml = []
    for sc in (base, follow):
        lab, img = _load(Path(plan.root) / f"{sc.truth_stem}_labels.nii.gz")
        csf_ml.append((lab == 1).sum() * np.prod(img.header.get_zooms()[:3]) / 1000)
    assert csf_ml[1] > csf_ml[0]


def test_tumour_only_in_tumour_cohort_and_enhancing_rim_on_t1c(cohorts):
    root, cfg, plans = cohorts
    for _sub, _ses, sc in plans["phantommem"].scan_plans():
        lab, _ = _load(Path(plans["phantommem"].root) / f"{sc.truth_stem}_labels.nii.gz")
        assert not np.isin(lab, [4, 5, 6]).any()
    onc = plans["phantomonc"]
    seen = set()
    for sub in onc.subjects:
        seen.add(sub.diagnosis)
        ratio = {}
        for sc in sub.sessions[0].scans:
            img, _ = _load(sc.ref.path)
            lab, _ = _load(Path(onc.root) / f"{sc.truth_stem}_labels.nii.gz")
            assert np.isin(lab, [4, 6]).any()
            wm = np.median(img[lab == 3])
            ratio[sc.ref.modality] = {k: float(np.median(img[lab == k]) / wm) if (lab == k).any() else None
                                      for k in (4, 5, 6)}
        if sub.diagnosis == "GBM":
            assert ratio["T1c"][5] > ratio["T1"][5] + 0.5  # rim enhances
        else:
            assert ratio["T1"][5] is None  # IDH-mutant: no enhancing rim
            assert ratio["T2"][4] > ratio["FLAIR"][4] + 0.5  # T2-FLAIR mismatch
        assert ratio["FLAIR"][6] > 1.4  # oedema bright on FLAIR
    assert seen == {"GBM", "glioma_other"}


def test_clinical_spreadsheets(cohorts):
    root, cfg, plans = cohorts
    adni = pd.read_csv(plans["phantommem"].clinical_files[0], dtype={"PTID": str})
    assert list(adni.columns) == ADNI_COLUMNS
    assert set(adni["DX"]) <= {"CN", "MCI", "Dementia", "PD"} and set(adni["PTGENDER"]) <= {"Male", "Female"}
    assert set(adni["VISCODE"]) <= {"bl", "m12", "m24", "m36"}
    assert adni["PTID"].str.fullmatch(r"\d{3}_S_\d{4}").all()
    assert pd.to_datetime(adni["EXAMDATE"], format="%Y-%m-%d").notna().all()
    assert set(adni["MANUFACTURER"]) <= {"SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems"}
    assert set(adni["FLDSTRENG"]) <= {"1.5 Tesla MRI", "3 Tesla MRI"}
    assert adni["MMSE"].dropna().between(0, 30).all() and set(adni["APOE4"]) <= {0, 1, 2}
    # AGE is the baseline age on every row of a subject, as in ADNIMERGE.
    assert (adni.groupby("PTID")["AGE"].nunique() == 1).all()
    assert len(adni) == len({(s.subject_raw, s.session_raw) for s in plans["phantommem"].scans})
    ucsf = pd.read_csv(plans["phantomonc"].clinical_files[0], keep_default_na=False)
    assert list(ucsf.columns) == UCSF_COLUMNS
    assert set(ucsf["Sex"]) <= {"M", "F"} and set(ucsf["IDH"]) <= {"wildtype", "mutated"}
    assert set(ucsf["WHO CNS Grade"]) <= {2, 3, 4} and set(ucsf["1p/19q"]) <= {"intact", "co-deleted", ""}
    assert set(ucsf["MGMT status"]) <= {"positive", "negative", "indeterminate"}
    assert ucsf["ID"].str.fullmatch(r"UCSF-PDGM-\d{4}").all()
    gbm = ucsf["Final pathologic diagnosis (WHO 2021)"] == "Glioblastoma, IDH-wildtype"
    assert (ucsf.loc[gbm, "IDH"] == "wildtype").all() and (ucsf.loc[gbm, "WHO CNS Grade"] == 4).all()


def test_deformation_has_no_affine_part():
    brain = tissues.load_tissues()
    brain = (brain >= 1) & (brain <= 3)
    u = anatomy.deformation_field(3, 2.0, brain)
    pts = np.stack(np.meshgrid(*(np.arange(n) * anatomy.DEFORM_STEP for n in u.shape[1:]), indexing="ij"), -1)
    inside = ndi.map_coordinates(brain.astype(np.float32), pts.reshape(-1, 3).T, order=0) > 0
    design = np.c_[pts.reshape(-1, 3), np.ones(inside.size)][inside]
    vec = u.reshape(3, -1).T[inside]
    coef, *_ = np.linalg.lstsq(design, vec, rcond=None)
    assert np.abs(coef[:3]).max() < 1e-4 and np.abs(coef[3]).max() < 1e-3
    assert np.sqrt((vec**2).sum(1).mean()) == pytest.approx(2.0, rel=1e-3)


def test_derived_tissues_are_stored_and_sane():
    lab = tissues.load_tissues()
    vent = tissues.load_ventricles()
    mask = np.asanyarray(nib.load(atlas_mod.atlas_paths().brain_mask).dataobj) > 0
    assert lab.shape == atlas_mod.SHAPE and set(np.unique(lab)) == {0, 1, 2, 3, 7}
    assert np.array_equal((lab >= 1) & (lab <= 3), mask)
    assert 10 < vent.sum() / 1000 < 40 and (lab[vent] == 1).mean() > 0.95
    wm, gm = (lab == 3).sum() / 1000, (lab == 2).sum() / 1000
    assert 300 < wm < 600 and 500 < gm < 900


def test_bad_specs_fail_clearly(tmp_path):
    cfg = _config(tmp_path)
    bad = dict(cfg["cohorts"]["phantomonc"], phantom={"style": "ucsfpdgm", "n_longitudinal": 2})
    with pytest.raises(ValueError, match="one session"):
        plan_cohort("phantomonc", bad, cfg)
    bad = dict(cfg["cohorts"]["phantommem"], phantom={"orientations": {"RRS": 1}})
    with pytest.raises(ValueError, match="orientation 'RRS'"):
        plan_cohort("phantommem", bad, cfg)
    path, _ = _write_config(tmp_path)
    assert cli(["phantom", "--configfile", str(path), "--cohort", "phantommem", "--subjects", "999_S_9999"]) == 1


def test_load_truth_resolves_paths(cohorts):
    from braing3n.phantom.truth import load_truth

    root, cfg, plans = cohorts
    plan = plans["phantomonc"]
    ref = plan.scans[0]
    t = load_truth(plan.root, ref)
    assert Path(t["image"]) == Path(ref.path).resolve() and Path(t["labels"]).exists()
    assert t["atlas_to_native"].shape == (4, 4)
    assert load_truth(Path(plan.root) / "derivatives/truth" / Path(t["brainmask"]).name.replace(
        "_brainmask.nii.gz", "_truth.json"))["subject"] == ref.subject


def test_vendor_contrast_and_pd_iron_signal():
    from braing3n.phantom import scanner

    ctx = anatomy.atlas_context()
    anat = anatomy.session_anatomy(None, {"sulcal_mm": 0.5, "ventricle_mm": 1.0, "medial_temporal_mm": 0.0}, 0)
    wm = ctx.full(anat.wm > 0.9)
    gm = ctx.full(anat.gm > 0.9)
    ratio = {}
    for vendor, k in (("Siemens", {"csf": 1.0, "gm": 1.0}), ("GE", {"csf": 0.85, "gm": 1.06})):
        img = scanner.intensity_volume(ctx, anat, "T1", None, False, k)
        ratio[vendor] = img[gm].mean() / img[wm].mean()
    assert ratio["GE"] < ratio["Siemens"] - 0.015  # more grey/white contrast on the GE sequence
    roi = ctx.full(ctx.pd_weight > 0.99) & (gm | wm)
    plain = scanner.intensity_volume(ctx, anat, "T2", None, False)
    pd = scanner.intensity_volume(ctx, anat, "T2", None, True)
    assert pd[roi].mean() < 0.8 * plain[roi].mean() and np.allclose(pd[~ctx.full(ctx.pd_weight > 0)],
                                                                    plain[~ctx.full(ctx.pd_weight > 0)])


def test_atlas_space_render_is_the_brain_on_the_sri24_grid_with_its_atrophy(tmp_path):
    import dataclasses

    from braing3n.phantom.atlas_space import write_atlas_space_cohort

    _, cfg = _write_config(tmp_path / "cfg")
    plan = plan_cohort("phantommem", cfg["cohorts"]["phantommem"], cfg)
    sub = next(s for s in plan.subjects if len(s.sessions) > 1)
    one = dataclasses.replace(plan, subjects=[sub])
    qc = write_atlas_space_cohort(one, tmp_path / "atlas")
    assert list(qc["status"]) == ["ok"] * len(qc) and len(qc) == sum(len(s.scans) for s in sub.sessions)
    vols = {row.scan_id: nib.load(row.volume) for row in qc.itertuples()}
    first, last = (vols[sc.ref.scan_id] for sc in (sub.sessions[0].scans[0], sub.sessions[-1].scans[0]))
    assert first.shape == atlas_mod.SHAPE and np.allclose(first.affine, atlas_mod.AFFINE)
    a, b = first.get_fdata(), last.get_fdata()
    brain_ml = (a > 0).sum() / 1000.0
    assert 1000 < brain_ml < 1800  # skull-stripped adult brain on the 1 mm grid
    # more atrophy at the follow-up: more of the brain is dark CSF (T1: CSF << white matter)
    wm = np.median(a[a > 0])
    assert (b[b > 0] < 0.5 * wm).sum() > (a[a > 0] < 0.5 * wm).sum()
    assert sub.sessions[-1].atrophy["ventricle_mm"] > sub.sessions[0].atrophy["ventricle_mm"]
