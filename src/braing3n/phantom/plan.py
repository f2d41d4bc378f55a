"""Plan a phantom cohort: every subject, session, scan and planted effect, without synthesis.

The Snakefile calls `plan_cohort` at parse time, so it only draws numbers (one seeded numpy
stream per subject, so `--subjects` filters and plans agree). `generate` writes exactly the
files listed here. Two styles fix the layout and the clinical spreadsheet:
- ``adni``: ``ADNI/{PTID}/{VISCODE}/{PTID}_{VISCODE}_{MPRAGE|FLAIR|T2}.nii.gz`` + ``ADNIMERGE.csv``;
- ``ucsfpdgm``: ``{ID}/{ID}_{T1|T1c|T2|FLAIR}.nii.gz`` + ``UCSF-PDGM-metadata_v2.csv``.
Ground truth per scan: ``derivatives/truth/sub-{subject}_ses-{session}_{modality}_*``.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braing3n.metadata.discover import MODALITIES, ScanRef, bids_label

STYLES = {
    "adni": {
        "tokens": {"T1": "MPRAGE", "FLAIR": "FLAIR", "T2": "T2"},
        "diagnoses": {"HC": 0.4, "MCI": 0.25, "AD": 0.2, "PD": 0.15},
        "modalities": {"T1": 1.0, "FLAIR": 0.33},
        "clinical": "ADNIMERGE.csv",
        "session_default": "bl",
    },
    "ucsfpdgm": {
        "tokens": {"T1": "T1", "T1c": "T1c", "T2": "T2", "FLAIR": "FLAIR"},
        "diagnoses": {"GBM": 0.6, "glioma_other": 0.4},
        "modalities": {"T1": 1.0, "T1c": 1.0, "T2": 1.0, "FLAIR": 1.0},
        "clinical": "UCSF-PDGM-metadata_v2.csv",
        "session_default": "01",
    },
}
AGE_RANGE = {"HC": (50, 90), "MCI": (58, 90), "AD": (62, 92), "PD": (50, 85), "GBM": (45, 85),
             "glioma_other": (20, 65)}
TUMOUR_DIAGNOSES = ("GBM", "glioma_other")
# Site table: (ADNI site number, canonical vendor, field strength T, storage dtype).
SITES = [(941, "Siemens", 3.0, "int16"), (23, "GE", 3.0, "int16"), (127, "Philips", 3.0, "float32"),
         (16, "Siemens", 1.5, "int16"), (5, "GE", 1.5, "int16"), (130, "Philips", 1.5, "float32")]
VISITS = {"m12": 12, "m24": 24, "m36": 36}
# Sequence/vendor contrast: multipliers on the CSF and GM intensities (white matter = reference),
# so the vendor stays visible after intensity normalisation, as with real MPRAGE vs IR-SPGR.
VENDOR_CONTRAST = {"Siemens": {"csf": 1.0, "gm": 1.0}, "GE": {"csf": 0.85, "gm": 1.06},
                   "Philips": {"csf": 1.15, "gm": 0.95}}
LOW_FIELD_GM = 0.92  # 1.5 T: a little less grey/white contrast
ORIENTATION_CODES = {"R", "L", "A", "P", "S", "I"}


@dataclass
class ScanPlan:
    ref: ScanRef
    token: str
    truth_stem: str  # root-relative, e.g. derivatives/truth/sub-X_ses-Y_T1
    orientation: str
    voxel_size: tuple[float, float, float]
    dtype: str
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    seed: int

    @property
    def truth_files(self) -> list[str]:
        return [f"{self.truth_stem}_{s}" for s in ("truth.json", "brainmask.nii.gz", "bias.nii.gz", "labels.nii.gz")]


@dataclass
class SessionPlan:
    session_raw: str
    session: str
    months: int
    age: float
    exam_date: str
    atrophy: dict  # sulcal_mm, ventricle_mm, medial_temporal_mm
    clinical: dict  # per-visit scores (MMSE, CDRSB)
    scans: list[ScanPlan] = field(default_factory=list)


@dataclass
class SubjectPlan:
    subject_raw: str
    subject: str
    index: int
    sex: str  # "M" | "F"
    diagnosis: str
    site: int
    vendor: str
    field_strength: float
    head_scale: tuple[float, float, float]
    intensity_scale: float
    noise_sigma: float  # fraction of the white-matter intensity
    bias_strength: float  # SD of the log bias field over the field of view
    seed: int
    tumour: dict | None
    clinical: dict  # per-subject columns (APOE4, grade, MGMT, ...)
    contrast: dict  # site sequence contrast: multipliers on CSF and GM distance from white matter
    sessions: list[SessionPlan] = field(default_factory=list)


@dataclass
class CohortPlan:
    name: str
    root: str
    style: str
    seed: int
    subjects: list[SubjectPlan]
    scans: list[ScanRef]
    clinical_files: list[str]
    truth_files: list[str]
    settings: dict

    def scan_plans(self) -> list[tuple[SubjectPlan, SessionPlan, ScanPlan]]:
        return [(sub, ses, sc) for sub in self.subjects for ses in sub.sessions for sc in ses.scans]

    @property
    def files(self) -> list[str]:
        return [s.path for s in self.scans] + self.clinical_files + self.truth_files


def cohort_seed(name: str, seed: int) -> int:
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def _weights(spec: dict, what: str, allowed=None) -> tuple[list, np.ndarray]:
    keys = sorted(spec)  # the plan must not depend on key order (YAML dumpers sort keys)
    w = np.asarray([float(spec[k]) for k in keys])
    if not keys or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"phantom {what}: need non-negative weights with a positive sum, got {spec}")
    if allowed is not None and set(keys) - set(allowed):
        raise ValueError(f"phantom {what}: unknown {sorted(set(keys) - set(allowed))} (allowed: {sorted(allowed)})")
    return keys, w / w.sum()


def parse_voxel_size(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in str(text).split("x")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) <= 0:
        raise ValueError(f"phantom voxel size {text!r}: use '2' (isotropic) or '1x1x4' (mm, last = slice axis)")
    return tuple(parts)


def _check_orientation(code: str) -> str:
    axes = [{"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(c) for c in code]
    if len(code) != 3 or None in axes or sorted(axes) != [0, 1, 2]:
        raise ValueError(f"phantom orientation {code!r}: need three letters covering R/L, A/P, S/I (e.g. RAS, PSR)")
    return code


def settings_for(cohort_cfg: dict, config: dict) -> dict:
    """Cohort phantom spec + shared defaults, with style defaults filled in."""
    spec = dict(cohort_cfg.get("phantom") or {})
    shared = dict(config.get("phantom") or {})
    style = spec.get("style", "adni")
    if style not in STYLES:
        raise ValueError(f"phantom style {style!r}: use one of {sorted(STYLES)}")
    out = {"style": style, "n_subjects": int(spec.get("n_subjects", 24)), "n_sites": int(spec.get("n_sites", 3)),
           "n_longitudinal": int(spec.get("n_longitudinal", 0)), "max_followups": int(spec.get("max_followups", 1)),
           "diagnoses": spec.get("diagnoses") or STYLES[style]["diagnoses"],
           "modalities": spec.get("modalities") or STYLES[style]["modalities"],
           "voxel_sizes": spec.get("voxel_sizes") or {"2": 0.6, "1x1x4": 0.3, "1": 0.1},
           "orientations": spec.get("orientations") or {"RAS": 1, "LAS": 1, "LPS": 1, "PSR": 1}}
    out.update({k: shared.get(k, v) for k, v in DEFAULT_SHARED.items()})
    if style == "ucsfpdgm" and out["n_longitudinal"]:
        raise ValueError("phantom style ucsfpdgm has one session per patient: set n_longitudinal: 0")
    if out["n_longitudinal"] > out["n_subjects"]:
        raise ValueError(f"phantom n_longitudinal={out['n_longitudinal']} exceeds n_subjects={out['n_subjects']}")
    if not 1 <= out["n_sites"] <= len(SITES):
        raise ValueError(f"phantom n_sites={out['n_sites']}: must be 1..{len(SITES)}")
    if not 1 <= out["max_followups"] <= len(VISITS):
        raise ValueError(f"phantom max_followups={out['max_followups']}: must be 1..{len(VISITS)}")
    return out


DEFAULT_SHARED = {"seed": 0, "max_rotation_deg": 15.0, "max_translation_mm": 15.0, "deformation_mm": 2.0,
                  "bias_strength_max": 0.25, "noise_min": 0.01, "noise_max": 0.04, "atrophy_scale": 1.0}


def atrophy_for(age: float, diagnosis: str, years_since_baseline: float, scale: float, sex: str = "F") -> dict:
    """Planted atrophy (mm of tissue turned into CSF): age-driven, faster and medial-temporal for MCI/AD.
    Men get 0.4 mm wider ventricles at any age (a sex effect that survives affine normalisation)."""
    years = max(0.0, age - 40.0)
    base = {"MCI": (0.15, 0.5, 1.0), "AD": (0.35, 1.2, 2.0)}.get(diagnosis, (0.0, 0.0, 0.0))
    speed = {"MCI": (0.03, 0.15, 0.2), "AD": (0.06, 0.3, 0.4)}.get(diagnosis, (0.0, 0.0, 0.0))  # extra mm/year
    fu = years_since_baseline
    return {"sulcal_mm": round(scale * (0.022 * years + base[0] + speed[0] * fu), 4),
            "ventricle_mm": round(scale * (0.06 * years + base[1] + speed[1] * fu) + (0.4 if sex == "M" else 0.0), 4),
            "medial_temporal_mm": round(scale * (base[2] + speed[2] * fu), 4)}


def _tumour(rng: np.random.Generator, diagnosis: str) -> dict:
    """GBM (IDH-wildtype): deep/temporo-parietal, necrotic core + enhancing rim + wide oedema.
    IDH-mutant glioma: frontal, solid non-enhancing (or faintly enhancing) core, T2-FLAIR mismatch, thin oedema."""
    side = rng.choice([-1.0, 1.0])
    if diagnosis == "GBM":
        centre = [120 + side * rng.uniform(18, 40), rng.uniform(105, 160), rng.uniform(60, 100)]
        radius = rng.uniform(12, 20)
        return {"centre_vox": [round(float(c), 2) for c in centre], "radius_mm": round(radius, 2),
                "core_radius_mm": round(radius * rng.uniform(0.45, 0.65), 2),
                "oedema_radius_mm": round(radius * rng.uniform(1.5, 1.9), 2), "enhancing": True,
                "enhancement": round(rng.uniform(0.8, 1.0), 3), "mismatch": False, "mass_effect": 0.35}
    centre = [120 + side * rng.uniform(15, 35), rng.uniform(45, 80), rng.uniform(70, 110)]
    radius = rng.uniform(11, 18)
    return {"centre_vox": [round(float(c), 2) for c in centre], "radius_mm": round(radius, 2),
            "core_radius_mm": round(radius, 2), "oedema_radius_mm": round(radius * rng.uniform(1.1, 1.25), 2),
            "enhancing": False, "enhancement": round(rng.uniform(0.0, 0.15), 3), "mismatch": True,
            "mass_effect": 0.15}


def _site_contrast(vendor: str, field_t: float) -> dict:
    gm = VENDOR_CONTRAST[vendor]["gm"] * (LOW_FIELD_GM if field_t < 2 else 1.0)
    return {"csf": VENDOR_CONTRAST[vendor]["csf"], "gm": round(gm, 4)}


def _clinical_subject(rng, style: str, diagnosis: str) -> dict:
    if style == "adni":
        p = {"HC": [0.75, 0.22, 0.03], "MCI": [0.5, 0.4, 0.1], "AD": [0.35, 0.45, 0.2], "PD": [0.75, 0.22, 0.03]}
        return {"APOE4": int(rng.choice(3, p=p[diagnosis]))}
    if diagnosis == "GBM":
        return {"grade": 4, "pathology": "Glioblastoma, IDH-wildtype", "idh": "wildtype",
                "codeletion": "", "mgmt": str(rng.choice(["positive", "negative", "indeterminate"], p=[.45, .45, .1]))}
    oligo = rng.random() < 0.4
    return {"grade": int(rng.choice([2, 3]) if oligo else rng.choice([2, 3, 4], p=[.4, .4, .2])),
            "pathology": "Oligodendroglioma, IDH-mutant, 1p/19q-codeleted" if oligo else "Astrocytoma, IDH-mutant",
            "idh": "mutated", "codeletion": "co-deleted" if oligo else "intact",
            "mgmt": str(rng.choice(["positive", "negative", "indeterminate"], p=[.8, .1, .1]))}


def _clinical_visit(rng, diagnosis: str, months: int) -> dict:
    base = {"HC": (29.0, 0.0), "MCI": (26.5, 1.5), "AD": (22.0, 4.5), "PD": (28.0, 0.3)}[diagnosis]
    decline = {"HC": (0.1, 0.0), "MCI": (0.8, 0.6), "AD": (2.5, 1.5), "PD": (0.3, 0.1)}[diagnosis]
    years = months / 12.0
    mmse = int(np.clip(round(base[0] - decline[0] * years + rng.normal(0, 1.0)), 0, 30))
    raw_cdrsb = base[1] + decline[1] * years + rng.normal(0, 0.4 if base[1] else 0.1)
    cdrsb = float(np.clip(round(raw_cdrsb * 2) / 2, 0, 18))  # CDR-SB moves in half points
    return {"MMSE": mmse if rng.random() > 0.08 else None, "CDRSB": cdrsb}


def plan_cohort(name: str, cohort_cfg: dict, config: dict) -> CohortPlan:
    """Deterministic plan of the cohort's files and planted effects (cheap: no image synthesis)."""
    s = settings_for(cohort_cfg, config)
    style, root = s["style"], str(cohort_cfg["root"])
    seed = cohort_seed(name, int(s["seed"]))
    diag_keys, diag_p = _weights(s["diagnoses"], "diagnoses", STYLES[style]["diagnoses"])
    vox_keys, vox_p = _weights(s["voxel_sizes"], "voxel_sizes")
    ori_keys, ori_p = _weights(s["orientations"], "orientations")
    for k in ori_keys:
        _check_orientation(k)
    for k in vox_keys:
        parse_voxel_size(k)
    mods = s["modalities"]
    tokens = STYLES[style]["tokens"]
    if set(mods) - set(tokens) or "T1" not in mods:
        raise ValueError(f"phantom modalities {sorted(mods)}: style {style} offers {sorted(tokens)} and needs T1")
    top = np.random.default_rng(seed)
    # Diagnoses as a shuffled quota (so small cohorts still hold every class), then per-subject streams.
    counts = np.floor(diag_p * s["n_subjects"]).astype(int)
    for i in np.argsort(-(diag_p * s["n_subjects"] - counts))[: s["n_subjects"] - counts.sum()]:
        counts[i] += 1
    diagnoses = top.permutation(np.repeat(diag_keys, counts))
    longitudinal = set(top.choice(s["n_subjects"], s["n_longitudinal"], replace=False).tolist())
    site_rows = [SITES[i] for i in range(s["n_sites"])]
    site_fx = [dict(scale=float(top.uniform(600, 3000)), noise=float(top.uniform(s["noise_min"], s["noise_max"])),
                    bias=float(s["bias_strength_max"] * top.uniform(0.4, 1.0))) for _ in site_rows]
    numbers = np.sort(top.choice(np.arange(1, 1500), s["n_subjects"], replace=False))

    subjects, scans, truth = [], [], []
    for idx in range(s["n_subjects"]):
        rng = np.random.default_rng([seed, idx])
        dx = str(diagnoses[idx])
        site_i = int(rng.integers(len(site_rows)))
        site_no, vendor, field_t, dtype = site_rows[site_i]
        sex = "M" if rng.random() < 0.5 else "F"
        base_scale = 1.0 if sex == "M" else 0.93
        head_scale = tuple(round(float(base_scale * v), 4) for v in rng.uniform(0.97, 1.03, 3))
        subject_raw = f"{site_no:03d}_S_{numbers[idx]:04d}" if style == "adni" else f"UCSF-PDGM-{numbers[idx]:04d}"
        age0 = float(rng.uniform(*AGE_RANGE[dx]))
        tumour = _tumour(rng, dx) if dx in TUMOUR_DIAGNOSES else None
        sub = SubjectPlan(subject_raw=subject_raw, subject=bids_label(subject_raw), index=idx, sex=sex, diagnosis=dx,
                          site=site_no, vendor=vendor, field_strength=field_t, head_scale=head_scale,
                          intensity_scale=round(site_fx[site_i]["scale"], 2),
                          noise_sigma=round(site_fx[site_i]["noise"] * (1.5 if field_t < 2 else 1.0), 4),
                          bias_strength=round(site_fx[site_i]["bias"], 4), seed=int(rng.integers(2**31)),
                          tumour=tumour, clinical=_clinical_subject(rng, style, dx),
                          contrast=_site_contrast(vendor, field_t))
        visits = [("bl", 0)]
        if idx in longitudinal:
            n_fu = int(rng.integers(1, s["max_followups"] + 1))
            chosen = sorted(rng.choice(list(VISITS), n_fu, replace=False).tolist(), key=VISITS.get)
            visits += [(v, VISITS[v]) for v in chosen]
        baseline = dt.date(2006, 1, 1) + dt.timedelta(days=int(rng.integers(0, 6 * 365)))
        head_pose = (rng.uniform(-1, 1, 3) * s["max_rotation_deg"], rng.uniform(-1, 1, 3) * s["max_translation_mm"])
        for viscode, months in visits:
            date = baseline + dt.timedelta(days=int(round(months * 30.44 + (rng.integers(-20, 21) if months else 0))))
            age = age0 + (date - baseline).days / 365.25
            session_raw = viscode if style == "adni" else STYLES[style]["session_default"]
            ses = SessionPlan(session_raw=session_raw, session=bids_label(session_raw), months=months,
                              age=round(age, 3), exam_date=date.isoformat(),
                              atrophy=atrophy_for(age, dx, (date - baseline).days / 365.25, s["atrophy_scale"], sex),
                              clinical=_clinical_visit(rng, dx, months) if style == "adni" else {})
            # Each session: a new head position; each scan: a little extra motion.
            if months:
                head_pose = (rng.uniform(-1, 1, 3) * s["max_rotation_deg"],
                             rng.uniform(-1, 1, 3) * s["max_translation_mm"])
            for mod in MODALITIES:
                if mod not in mods or (mod != "T1" and rng.random() >= float(mods[mod])):
                    continue
                token = tokens[mod]
                rel = (f"ADNI/{subject_raw}/{session_raw}/{subject_raw}_{session_raw}_{token}.nii.gz"
                       if style == "adni" else f"{subject_raw}/{subject_raw}_{token}.nii.gz")
                ref = ScanRef(cohort=name, subject=sub.subject, session=ses.session, modality=mod,
                              path=str(Path(root) / rel), subject_raw=subject_raw, session_raw=session_raw)
                rot = head_pose[0] + rng.normal(0, 1.0, 3)
                trans = head_pose[1] + rng.normal(0, 1.0, 3)
                sc = ScanPlan(ref=ref, token=token,
                              truth_stem=f"derivatives/truth/sub-{sub.subject}_ses-{ses.session}_{mod}",
                              orientation=str(ori_keys[rng.choice(len(ori_keys), p=ori_p)]),
                              voxel_size=parse_voxel_size(vox_keys[rng.choice(len(vox_keys), p=vox_p)]),
                              dtype=dtype, rotation_deg=tuple(round(float(v), 3) for v in rot),
                              translation_mm=tuple(round(float(v), 3) for v in trans), seed=int(rng.integers(2**31)))
                ses.scans.append(sc)
                scans.append(ref)
                truth += [str(Path(root) / f) for f in sc.truth_files]
            sub.sessions.append(ses)
        subjects.append(sub)
    scans.sort(key=lambda r: (r.subject, r.session, MODALITIES.index(r.modality)))
    clinical = [str(Path(root) / STYLES[style]["clinical"])]
    truth.append(str(Path(root) / "derivatives/truth/truth.csv"))
    return CohortPlan(name=name, root=root, style=style, seed=seed, subjects=subjects, scans=scans,
                      clinical_files=clinical, truth_files=truth, settings=s)
