"""Subject anatomy in atlas space (1 mm SRI24 grid): atrophy, disease effects, tumour, deformation.

Soft CSF/GM/WM maps come from the derived SRI24 mixture (`tissues.py`). Atrophy turns tissue
into CSF by distance: sulcal widening eats grey matter within ``sulcal_mm`` of sulcal CSF,
ventricular widening eats tissue within ``ventricle_mm`` of the ventricles, and medial temporal
atrophy (MCI/AD) adds extra sulcal widening inside a hippocampal region. A tumour pushes tissue
outwards (mass effect), then replaces it with core / enhancing rim / oedema maps. The smooth
deformation is applied later, when the scanner samples these maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from braing3n import atlas as atlas_mod
from braing3n.phantom import tissues

# Atlas-voxel regions (SRI24 LPS grid; x = left, y = posterior, z = superior). Centres and
# semi-axes in mm, placed by inspecting the SRI24 T1: both hippocampi / medial temporal lobes,
# both putamina and the substantia nigra.
MEDIAL_TEMPORAL = [((93.0, 128.0, 50.0), (9.0, 20.0, 9.0)), ((147.0, 128.0, 50.0), (9.0, 20.0, 9.0))]
BASAL_GANGLIA = [((96.0, 110.0, 75.0), (6.0, 13.0, 9.0)), ((144.0, 110.0, 75.0), (6.0, 13.0, 9.0)),
                 ((112.0, 130.0, 55.0), (4.0, 6.0, 4.0)), ((128.0, 130.0, 55.0), (4.0, 6.0, 4.0))]
DEFORM_STEP = 4  # mm between stored deformation samples (upsampled from a 24 mm control grid)
# Sex dimorphism that survives affine normalisation: one fixed affine-free shape pattern,
# added with +SEX_SHAPE_MM RMS for men and -SEX_SHAPE_MM for women.
SEX_SHAPE_MM = 1.5
SEX_SHAPE_SEED = 20100798


@dataclass
class AtlasContext:
    """Atlas-derived arrays. Brain arrays are cropped to ``box`` (brain bounding box + margin)."""

    box: tuple[slice, slice, slice]
    probs: np.ndarray  # (3, *box) CSF, GM, WM
    brain: np.ndarray  # bool, box
    head: np.ndarray  # bool, full grid (brain + skull/scalp)
    head_texture: np.ndarray  # full grid: T1 with skull outside the brain, white matter = 1
    ventricles: np.ndarray  # bool, box
    vent_sdist: np.ndarray  # box: signed distance to the ventricles (mm, < 0 inside)
    csf_dist: np.ndarray  # box: distance to sulcal (non-ventricular) CSF, mm
    mta_weight: np.ndarray  # box: 0..1 medial temporal region
    pd_weight: np.ndarray  # box: 0..1 basal ganglia / nigra region
    centre_world: np.ndarray  # atlas world centre of the brain (RAS mm)

    @property
    def offset(self) -> np.ndarray:
        return np.array([s.start for s in self.box], float)

    def full(self, part: np.ndarray, fill=0) -> np.ndarray:
        out = np.full(self.head.shape, fill, part.dtype)
        out[self.box] = part
        return out


def _ellipsoid_weight(box, regions) -> np.ndarray:
    grid = np.ogrid[tuple(slice(s.start, s.stop) for s in box)]
    w = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for centre, axes in regions:
        r2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True))
        w = np.maximum(w, np.clip(1.5 - r2, 0, 1).astype(np.float32))  # flat inside, soft edge
    return w


@functools.lru_cache(maxsize=1)
def atlas_context() -> AtlasContext:
    """Everything derived once per process (a few seconds)."""
    paths = atlas_mod.atlas_paths()
    labels = tissues.load_tissues()
    brain_full = (labels >= 1) & (labels <= 3)
    head = labels > 0
    head_t1 = np.asanyarray(nib.load(paths.t1).dataobj).astype(np.float32)
    wm_level = float(np.median(head_t1[labels == 3]))
    texture = np.where(head & ~brain_full, head_t1 / wm_level, 0).astype(np.float32)
    # Everything brain-related lives in the brain's bounding box + margin (3x fewer voxels).
    found = ndi.find_objects(brain_full.astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 10), min(n, s.stop + 10)) for s, n in zip(found, labels.shape, strict=True))
    brain = brain_full[box]
    vent = tissues.load_ventricles()[box]
    vent_sd = (ndi.distance_transform_edt(~vent) - ndi.distance_transform_edt(vent)).astype(np.float32)
    csf = (labels[box] == 1) & ~vent
    csf_d = ndi.distance_transform_edt(~csf).astype(np.float32)
    ijk = np.argwhere(brain_full).mean(0)
    return AtlasContext(box=box, probs=np.ascontiguousarray(tissues.tissue_probabilities()[(slice(None), *box)]),
                        brain=brain, head=head, head_texture=texture, ventricles=vent, vent_sdist=vent_sd,
                        csf_dist=csf_d, mta_weight=_ellipsoid_weight(box, MEDIAL_TEMPORAL),
                        pd_weight=_ellipsoid_weight(box, BASAL_GANGLIA),
                        centre_world=nib.affines.apply_affine(atlas_mod.AFFINE, ijk))


@dataclass
class SessionAnatomy:
    """Soft tissue maps of one subject at one visit, cropped to the context box (float32, 0..1)."""

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    ventricles: np.ndarray  # soft ventricle fraction (part of csf)
    core: np.ndarray | None
    rim: np.ndarray | None
    oedema: np.ndarray | None

    def labels(self, ctx: AtlasContext) -> np.ndarray:
        """Full-grid hard labels: 0 bg, 1 CSF, 2 GM, 3 WM, 4 core, 5 rim, 6 oedema, 7 skull/scalp."""
        best = self.csf.copy()
        total = self.csf + self.gm + self.wm
        lab = np.ones(best.shape, np.uint8)
        extra = [m for m in (self.core, self.rim, self.oedema) if m is not None]
        for value, m in zip(range(2, 2 + 2 + len(extra)), [self.gm, self.wm, *extra], strict=True):
            better = m > best
            lab[better] = value
            np.maximum(best, m, out=best)
        for m in extra:
            total += m
        lab[total < 0.5] = 0
        full = ctx.full(lab)
        full[(full == 0) & ctx.head] = 7
        return full

    def volumes_ml(self) -> dict[str, float]:
        out = {k: float(getattr(self, k).sum(dtype=np.float64)) / 1000.0 for k in ("csf", "gm", "wm", "ventricles")}
        for k in ("core", "rim", "oedema"):
            m = getattr(self, k)
            out[k] = float(m.sum(dtype=np.float64)) / 1000.0 if m is not None else 0.0
        return {k: round(v, 3) for k, v in out.items()}


def _tumour_maps(ctx: AtlasContext, maps: list[np.ndarray], tumour: dict, seed: int):
    """Mass effect + tumour compartments, computed in a box around the tumour only."""
    c = np.asarray(tumour["centre_vox"], float) - ctx.offset  # box coordinates
    r, r_core, r_oed = tumour["radius_mm"], tumour["core_radius_mm"], tumour["oedema_radius_mm"]
    half = int(np.ceil(r_oed * 1.3 + 6))
    lo = np.maximum(np.floor(c).astype(int) - half, 0)
    hi = np.minimum(np.floor(c).astype(int) + half + 1, ctx.brain.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axes = [np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    rel = grid - c[:, None, None, None].astype(np.float32)
    dist = np.sqrt((rel**2).sum(0))
    # Mass effect: content at distance d comes from d*(1-k(d)); monotonic for k <= mass_effect < 1.
    k = tumour["mass_effect"] * np.exp(-((dist / (1.5 * r)) ** 2))
    src = c[:, None, None, None] + rel * (1 - k)
    pushed = [ndi.map_coordinates(m, src, order=1, mode="nearest") for m in maps]
    brain = ndi.map_coordinates(ctx.brain.astype(np.float32), src, order=1)
    noise = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(dist.shape), 4.0)
    noise /= noise.std() + 1e-6
    rho = dist / (1 + 0.12 * noise)  # irregular, lobulated boundary
    tumour_f = np.clip(r - rho + 0.5, 0, 1) * brain
    core_f = np.clip(r_core - rho + 0.5, 0, 1) * brain
    rim_f = tumour_f - np.minimum(core_f, tumour_f)
    oed_zone = np.clip(r_oed - rho + 0.5, 0, 1) * brain - tumour_f
    csf, gm, wm, vent = (p * (1 - tumour_f) for p in pushed)
    oed = oed_zone * (wm + 0.3 * gm)  # oedema spreads along white matter, less in cortex
    wm = wm * (1 - oed_zone)
    gm = gm * (1 - 0.3 * oed_zone)
    full = []
    for i, part in enumerate((csf, gm, wm, vent, core_f, rim_f, oed)):
        out = maps[i].copy() if i < len(maps) else np.zeros_like(maps[0])
        out[box] = part
        full.append(out.astype(np.float32))
    return full


def session_anatomy(subject_tumour: dict | None, atrophy: dict, seed: int) -> SessionAnatomy:
    """Tissue maps for one visit: atrophy from ``atrophy`` (see plan.atrophy_for), tumour if any."""
    ctx = atlas_context()
    csf, gm, wm = (p.copy() for p in ctx.probs)
    vent = ctx.ventricles.astype(np.float32) * csf
    sulcal = atrophy["sulcal_mm"] + atrophy["medial_temporal_mm"] * ctx.mta_weight
    g = np.clip(sulcal - ctx.csf_dist + 0.5, 0, 1)
    lost_gm, lost_wm = gm * g, wm * g * ctx.mta_weight
    gm -= lost_gm
    wm -= lost_wm
    csf += lost_gm + lost_wm
    gv = np.clip(atrophy["ventricle_mm"] - ctx.vent_sdist + 0.5, 0, 1) * ctx.brain
    lost = (gm + wm) * gv
    gm *= 1 - gv
    wm *= 1 - gv
    csf += lost
    vent += lost
    core = rim = oed = None
    if subject_tumour:
        csf, gm, wm, vent, core, rim, oed = _tumour_maps(ctx, [csf, gm, wm, vent], subject_tumour, seed)
    return SessionAnatomy(csf=csf, gm=gm, wm=wm, ventricles=vent, core=core, rim=rim, oedema=oed)


def deformation_field(seed: int, rms_mm: float, brain: np.ndarray) -> np.ndarray:
    """Smooth displacement (3, X/4, Y/4, Z/4) in atlas voxels (= mm), no affine part, RMS ``rms_mm`` in the brain."""
    rng = np.random.default_rng(seed)
    shape = brain.shape
    coarse = rng.standard_normal((3, *(int(np.ceil(n / 24)) + 1 for n in shape)))
    fine_shape = tuple(int(np.ceil(n / DEFORM_STEP)) + 1 for n in shape)
    field = np.stack([ndi.zoom(c, [f / s for f, s in zip(fine_shape, c.shape, strict=True)], order=3) for c in coarse])
    pts = np.stack(np.meshgrid(*(np.arange(n) * DEFORM_STEP for n in fine_shape), indexing="ij"), -1)
    inside = ndi.map_coordinates(brain.astype(np.float32), pts.reshape(-1, 3).T, order=0) > 0
    design = np.c_[pts.reshape(-1, 3), np.ones(len(inside))]
    u = field.reshape(3, -1).T
    coef, *_ = np.linalg.lstsq(design[inside], u[inside], rcond=None)  # least-squares affine part
    u = u - design @ coef
    rms = np.sqrt((u[inside] ** 2).sum(1).mean())
    u *= rms_mm / max(rms, 1e-9)
    return u.T.reshape(3, *fine_shape).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _sex_shape() -> np.ndarray:
    ctx = atlas_context()
    return deformation_field(SEX_SHAPE_SEED, 1.0, ctx.full(ctx.brain))


def subject_deformation(seed: int, rms_mm: float, sex: str) -> tuple[np.ndarray, float]:
    """Random affine-free deformation + the sex shape pattern; returns (field, its RMS in the brain, mm)."""
    ctx = atlas_context()
    brain = ctx.full(ctx.brain)
    disp = deformation_field(seed, rms_mm, brain) + (SEX_SHAPE_MM if sex == "M" else -SEX_SHAPE_MM) * _sex_shape()
    pts = np.stack(np.meshgrid(*(np.arange(n) * DEFORM_STEP for n in disp.shape[1:]), indexing="ij"))
    inside = ndi.map_coordinates(brain.astype(np.float32), pts.reshape(3, -1), order=0) > 0
    rms = float(np.sqrt((disp.reshape(3, -1)[:, inside] ** 2).sum(0).mean()))
    return disp.astype(np.float32), rms
