"""A phantom cohort as the preprocessing chain should deliver it: SRI24 grid, skull-stripped, no bias.

Each scan is the subject's anatomy (session atrophy, tumour, the subject's affine-free deformation
with its planted sex pattern) rendered straight on the 1 mm atlas grid with the scan's intensity
level and Rician noise, then masked to the true brain. No head placement, no bias field, no
resampling to a native grid: this is the target the per-scan chain (N4 -> HD-BET -> affine)
approximates, so the learning stages can be run and tested on demo-sized cohorts without the
~1 core-minute per scan that the real chain costs on CPU.

The output has the columns the store stage reads from a QC table (scan_id, status, reason,
volume), so ``braing3n.data.store.build_store`` takes it unchanged.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n import atlas as atlas_mod
from braing3n.phantom import anatomy
from braing3n.phantom.generate import nifti_bytes, render_scan
from braing3n.phantom.plan import CohortPlan, SubjectPlan


def render_subject(sub: SubjectPlan, deformation_mm: float) -> dict[str, np.ndarray]:
    """scan_id -> float32 atlas-grid volume (240x240x155, brain only) for every scan of the subject."""
    ctx = anatomy.atlas_context()
    disp, _ = anatomy.subject_deformation(sub.seed, deformation_mm, sub.sex)
    out = {}
    for ses in sub.sessions:
        anat = anatomy.session_anatomy(sub.tumour, ses.atrophy, sub.seed)
        labels_atlas = anat.labels(ctx)
        for sc in ses.scans:
            # identity placement and no bias field: the atlas grid samples the deformed anatomy directly
            img, labels, _ = render_scan(ctx, anat, labels_atlas, sub, sc, (atlas_mod.SHAPE, atlas_mod.AFFINE,
                                                                            np.eye(4)), disp, thick=False)
            out[sc.ref.scan_id] = np.where((labels >= 1) & (labels <= 6), img, 0).astype(np.float32)
    return out


def _write_subject(args: tuple[SubjectPlan, float, str]) -> list[dict]:
    sub, deformation_mm, out_dir = args
    rows = []
    for scan_id, vol in render_subject(sub, deformation_mm).items():
        path = Path(out_dir) / f"{scan_id}_space-SRI24.nii.gz"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(nifti_bytes(vol, atlas_mod.AFFINE, "float32"))
        os.replace(tmp, path)
        rows.append({"scan_id": scan_id, "status": "ok", "reason": "", "volume": str(path)})
    return rows


def write_atlas_space_cohort(plan: CohortPlan, out_dir: str | Path, workers: int = 1) -> pd.DataFrame:
    """Render every planned scan to ``out_dir``; returns the QC-table-shaped index (scan_id order)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(sub, float(plan.settings["deformation_mm"]), str(out_dir)) for sub in plan.subjects]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_write_subject, jobs))
    else:
        parts = [_write_subject(j) for j in jobs]
    return pd.DataFrame([r for p in parts for r in p]).sort_values("scan_id", ignore_index=True)
