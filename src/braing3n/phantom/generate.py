"""Write a planned phantom cohort: raw NIfTI, clinical spreadsheet, ground truth per scan.

Each file is written atomically (hidden temp file + rename) and gzip'ed without timestamp or
name, so the same seed gives byte-identical files. Subjects are independent (one seeded stream
each), so generating a subset writes exactly the same bytes as the full run.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from braing3n.phantom import anatomy, scanner
from braing3n.phantom.plan import CohortPlan, ScanPlan, SessionPlan, SubjectPlan

GENERATOR_VERSION = "braing3n.phantom/1"
MODALITY_GAIN = {"T1": 1.0, "T1c": 1.0, "T2": 0.8, "FLAIR": 0.9}
ADNI_VENDOR = {"Siemens": "SIEMENS", "GE": "GE MEDICAL SYSTEMS", "Philips": "Philips Medical Systems"}
ADNI_DX = {"HC": "CN", "MCI": "MCI", "AD": "Dementia", "PD": "PD"}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def nifti_bytes(data: np.ndarray, affine: np.ndarray, dtype: str) -> bytes:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def _storage(img: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "int16":
        return np.clip(np.rint(img), 0, 32767).astype(np.int16)
    return img.astype(np.float32)


def scan_truth(plan: CohortPlan, sub: SubjectPlan, ses: SessionPlan, sc: ScanPlan, shape, native_affine,
               a2n: np.ndarray, extra: dict) -> dict:
    """The truth sidecar: geometry, planted effects, paths (root-relative) of the truth images."""
    tum = None
    if sub.tumour:
        centre_world = nib.affines.apply_affine(scanner.atlas_mod.AFFINE, sub.tumour["centre_vox"])
        tum = dict(sub.tumour, centre_atlas_mm=[round(float(v), 3) for v in centre_world],
                   centre_native_mm=[round(float(v), 3) for v in nib.affines.apply_affine(a2n, centre_world)])
    return {
        "generator": GENERATOR_VERSION, "cohort": plan.name, "subject": sub.subject, "session": ses.session,
        "modality": sc.ref.modality, "subject_raw": sub.subject_raw, "session_raw": ses.session_raw,
        "token": sc.token, "image": os.path.relpath(sc.ref.path, plan.root),
        "atlas_to_native": np.round(a2n, 6).tolist(), "native_affine": np.round(native_affine, 6).tolist(),
        "shape": list(shape), "voxel_size": list(sc.voxel_size), "orientation": sc.orientation, "dtype": sc.dtype,
        "age": ses.age, "sex": sub.sex, "diagnosis": sub.diagnosis, "months_from_baseline": ses.months,
        "exam_date": ses.exam_date, "atrophy": ses.atrophy, "tumour": tum,
        "idh": sub.clinical.get("idh"), "site": sub.site, "vendor": sub.vendor, "field_strength": sub.field_strength,
        "noise_sigma": sub.noise_sigma, "bias_strength": sub.bias_strength, "intensity_scale": sub.intensity_scale,
        "head_scale": list(sub.head_scale), "rotation_deg": list(sc.rotation_deg),
        "translation_mm": list(sc.translation_mm), "seed": sc.seed, **extra,
        "brainmask": f"{sc.truth_stem}_brainmask.nii.gz", "bias": f"{sc.truth_stem}_bias.nii.gz",
        "labels": f"{sc.truth_stem}_labels.nii.gz",
    }


def render_scan(ctx, anat, atlas_labels: np.ndarray, sub: SubjectPlan, sc, grid: tuple, disp, thick: bool,
                bias: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """One scan's image: the session anatomy in the scan's contrast, sampled on ``grid`` = (shape,
    affine, atlas-to-native placement) through the subject's deformation, times the bias field and
    the subject's intensity level, plus Rician noise. Returns (image, labels, level)."""
    shape, affine, a2n = grid
    atlas_img = scanner.intensity_volume(ctx, anat, sc.ref.modality, sub.tumour, sub.diagnosis == "PD", sub.contrast)
    clean, labels = scanner.sample_scan(atlas_img, atlas_labels, shape, affine, a2n, disp, thick)
    level = sub.intensity_scale * MODALITY_GAIN[sc.ref.modality]
    return scanner.add_noise(clean * bias * level, sub.noise_sigma * level, sc.seed + 1), labels, level


def generate_subject(plan: CohortPlan, sub: SubjectPlan, log=print) -> list[str]:
    """Synthesise every scan of one subject; returns the files written."""
    ctx = anatomy.atlas_context()
    root = Path(plan.root)
    s = plan.settings
    disp, disp_rms = anatomy.subject_deformation(sub.seed, float(s["deformation_mm"]), sub.sex)
    written = []
    for ses in sub.sessions:
        t0 = time.perf_counter()
        anat = anatomy.session_anatomy(sub.tumour, ses.atrophy, sub.seed)
        atlas_labels = anat.labels(ctx)
        volumes = anat.volumes_ml()
        for sc in ses.scans:
            t1 = time.perf_counter()
            a2n = scanner.placement(ctx.centre_world, sub.head_scale, sc.rotation_deg, sc.translation_mm)
            shape, naff = scanner.native_grid(sc.orientation, sc.voxel_size)
            thick = max(sc.voxel_size) >= 2 * min(sc.voxel_size)
            bias = scanner.bias_field(shape, naff, sub.bias_strength, sc.seed)
            img, labels, level = render_scan(ctx, anat, atlas_labels, sub, sc, (shape, naff, a2n), disp, thick, bias)
            brainmask = ((labels >= 1) & (labels <= 6)).astype(np.uint8)
            extra = {"volumes_ml": volumes, "noise_sigma_abs": round(sub.noise_sigma * level, 4),
                     "deformation_rms_mm": round(disp_rms, 4), "contrast": sub.contrast,
                     "sex_shape_mm": anatomy.SEX_SHAPE_MM * (1 if sub.sex == "M" else -1),
                     "clinical": {**sub.clinical, **ses.clinical}}
            truth = scan_truth(plan, sub, ses, sc, shape, naff, a2n, extra)
            outputs = {
                Path(sc.ref.path): nifti_bytes(_storage(img, sc.dtype), naff, sc.dtype),
                root / truth["brainmask"]: nifti_bytes(brainmask, naff, "uint8"),
                root / truth["bias"]: nifti_bytes(bias, naff, "float32"),
                root / truth["labels"]: nifti_bytes(labels, naff, "uint8"),
                root / f"{sc.truth_stem}_truth.json": (json.dumps(truth, indent=1, sort_keys=True) + "\n").encode(),
            }
            for path, data in outputs.items():
                _atomic_write(path, data)
                written.append(str(path))
            log(f"phantom {plan.name} {sc.ref.scan_id}: {shape} {sc.orientation} {sc.voxel_size} mm "
                f"{time.perf_counter() - t1:.2f} s")
        log(f"phantom {plan.name} sub-{sub.subject} ses-{ses.session}: {len(ses.scans)} scans, "
            f"{time.perf_counter() - t0:.2f} s")
    return written


def clinical_table(plan: CohortPlan) -> pd.DataFrame:
    """The cohort's spreadsheet, in the style's own column names and codes."""
    rows = []
    if plan.style == "adni":
        for sub in plan.subjects:
            age0 = sub.sessions[0].age
            for ses in sub.sessions:
                rows.append({"RID": int(sub.subject_raw.split("_S_")[1]), "PTID": sub.subject_raw,
                             "VISCODE": ses.session_raw, "EXAMDATE": ses.exam_date, "AGE": round(age0, 1),
                             "PTGENDER": "Male" if sub.sex == "M" else "Female", "DX": ADNI_DX[sub.diagnosis],
                             "MMSE": ses.clinical["MMSE"], "CDRSB": ses.clinical["CDRSB"],
                             "APOE4": sub.clinical["APOE4"], "SITE": sub.site,
                             "MANUFACTURER": ADNI_VENDOR[sub.vendor],
                             "FLDSTRENG": "3 Tesla MRI" if sub.field_strength > 2 else "1.5 Tesla MRI"})
        df = pd.DataFrame(rows)
        df["MMSE"] = df["MMSE"].astype("Int64")
        return df
    for sub in plan.subjects:
        c = sub.clinical
        rows.append({"ID": sub.subject_raw, "Sex": sub.sex, "Age at MRI": int(sub.sessions[0].age),
                     "WHO CNS Grade": c["grade"], "Final pathologic diagnosis (WHO 2021)": c["pathology"],
                     "MGMT status": c["mgmt"], "IDH": c["idh"], "1p/19q": c["codeletion"], "Scanner": sub.vendor})
    return pd.DataFrame(rows)


def truth_table(plan: CohortPlan) -> pd.DataFrame:
    """One row per scan with the planted effects (from the plan: complete even for a --subjects run)."""
    rows = []
    for sub, ses, sc in plan.scan_plans():
        rows.append({"scan_id": sc.ref.scan_id, "subject_id": sc.ref.subject_id, "subject": sub.subject,
                     "session": ses.session, "modality": sc.ref.modality, "age": ses.age, "sex": sub.sex,
                     "diagnosis": sub.diagnosis, "idh": sub.clinical.get("idh", ""), "site": sub.site,
                     "vendor": sub.vendor, "field_strength": sub.field_strength, **ses.atrophy,
                     "tumour_radius_mm": sub.tumour["radius_mm"] if sub.tumour else 0.0,
                     "orientation": sc.orientation, "voxel_size": "x".join(f"{v:g}" for v in sc.voxel_size),
                     "noise_sigma": sub.noise_sigma, "bias_strength": sub.bias_strength,
                     "truth_json": f"{sc.truth_stem}_truth.json"})
    return pd.DataFrame(rows)


def write_tables(plan: CohortPlan, config: dict) -> list[str]:
    from braing3n.provenance import provenance, write_table

    root = Path(plan.root)
    clinical = Path(plan.clinical_files[0])
    buf = clinical_table(plan).to_csv(index=False)
    _atomic_write(clinical, buf.encode())
    truth_csv = root / "derivatives/truth/truth.csv"
    write_table(truth_table(plan), truth_csv, provenance(config, seed=plan.seed, scans=len(plan.scans)),
                markdown=False)
    return [str(clinical), str(truth_csv)]


def generate_cohort(plan: CohortPlan, config: dict, subjects: list[str] | None = None, log=print) -> list[str]:
    """Write the cohort (or only ``subjects``, raw or label form); returns the files written."""
    wanted = None if not subjects else set(subjects)
    chosen = [s for s in plan.subjects if wanted is None or s.subject in wanted or s.subject_raw in wanted]
    if wanted is not None:
        missing = wanted - {s.subject for s in chosen} - {s.subject_raw for s in chosen}
        if missing:
            raise ValueError(f"phantom cohort {plan.name}: no planned subject {sorted(missing)}")
    t0 = time.perf_counter()
    written = write_tables(plan, config)
    for sub in chosen:
        written += generate_subject(plan, sub, log=log)
    n = sum(len(ses.scans) for sub in chosen for ses in sub.sessions)
    log(f"phantom {plan.name}: {len(chosen)} subjects, {n} scans, {time.perf_counter() - t0:.1f} s")
    return written
