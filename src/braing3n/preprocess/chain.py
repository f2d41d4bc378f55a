"""The per-scan chain: read -> head mask -> N4 -> HD-BET -> register -> resample once -> clip -> QC.

`run_t1` handles a session's T1 (affine to SRI24) and writes the native files the other
modalities need; `run_modality` registers T2/FLAIR/T1c rigidly to that T1 and resamples once
through [T1->atlas, modality->T1]. Products go to a hidden temp folder next to the record and
are renamed into place only when the whole scan succeeded; the record is written last.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import ants
import numpy as np
from scipy import ndimage

from braing3n.atlas import atlas_paths, check_readable
from braing3n.preprocess import checks, inputs, qc
from braing3n.preprocess.faults import stage
from braing3n.preprocess.io import ScanError, read_scan, save_ants
from braing3n.preprocess.n4 import N4Params, despike, head_mask, n4
from braing3n.preprocess.register import RegParams, register, to_atlas
from braing3n.preprocess.resample import block_factors, expand_nearest, shrink, to_working_resolution
from braing3n.preprocess.skullstrip import HDBET_MM, brain_mask


@dataclass(frozen=True)
class ChainParams:
    hdbet_mode: str = "fast"
    hdbet_device: str = "auto"
    hdbet_v2_checkpoint: str | None = None
    n4: N4Params = N4Params()
    t1_reg: RegParams = RegParams()
    modality_reg: RegParams = RegParams(transform="Rigid")
    crop_margin_mm: float = 10.0
    min_brain_ml: float = 300.0
    min_ncc_t1: float = 0.3
    atlas_mm: float = 2.0
    working_mm: float = 1.0  # scans finer than 0.75 mm on an axis are averaged to ~this there
    min_nmi_modality: float = 1.02
    check_params: checks.CheckParams = checks.CheckParams()
    seed: int = 0

    @classmethod
    def from_config(cls, config: dict) -> ChainParams:
        p = config.get("preprocess", {})
        h, n, r = p.get("hdbet", {}), p.get("n4", {}), p.get("registration", {})
        reg = {k: tuple(r[k]) if isinstance(r.get(k), list) else r[k]
               for k in ("metric", "sampling_rate", "iterations", "shrink_factors", "smoothing_sigmas") if k in r}
        return cls(
            hdbet_mode=h.get("mode", cls.hdbet_mode), hdbet_device=h.get("device", cls.hdbet_device),
            hdbet_v2_checkpoint=h.get("v2_checkpoint"),
            n4=N4Params(**{k: tuple(v) if isinstance(v, list) else v for k, v in n.items()}),
            t1_reg=RegParams(transform=r.get("t1_transform", "Affine"), **reg),
            modality_reg=RegParams(transform=r.get("modality_transform", "Rigid"), **reg),
            crop_margin_mm=p.get("crop_margin_mm", cls.crop_margin_mm),
            min_brain_ml=p.get("min_brain_ml", cls.min_brain_ml), min_ncc_t1=p.get("min_ncc_t1", cls.min_ncc_t1),
            min_nmi_modality=p.get("min_nmi_modality", cls.min_nmi_modality),
            atlas_mm=r.get("atlas_mm", cls.atlas_mm), seed=int(config.get("seed", 0)),
            check_params=checks.CheckParams(min_brain_ml=p.get("min_brain_ml", cls.min_brain_ml),
                                            scale_range=tuple(p.get("reg_scale_range", checks.CheckParams.scale_range)),
                                            max_shear=p.get("max_reg_shear", checks.CheckParams.max_shear)))


@dataclass
class Products:
    """File names (relative to the record's folder) for one scan: BIDS-derivatives names (paths.py)."""

    subject: str
    session: str
    modality: str
    names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from braing3n.paths import product_names  # the one source of the BIDS names

        self.names = product_names(self.subject, self.session, self.modality)


HEAD_MASK_MM = 4.0  # grid of the head mask: its boundary only sets N4's mask and HD-BET's crop
NOTHING_DECLARED = inputs.Declared()  # detect both from the image
MIN_HEAD_ML = 50.0  # far below any head (> 1,000 mL); catches a mask or a blank volume given as a scan


class Staging:
    """Hidden temp folder next to the record; `commit` renames its files into place."""

    def __init__(self, out_dir: Path, products: Products):
        self.out_dir, self.products = out_dir, products
        self.tmp = out_dir / f".tmp-{products.subject}-{products.session}-{products.modality}-{os.getpid()}"

    def __enter__(self) -> Staging:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        p = self.products  # a killed earlier run of this scan (another pid) may have left its folder
        for stale in self.out_dir.glob(f".tmp-{p.subject}-{p.session}-{p.modality}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir()
        return self

    def path(self, key: str) -> str:
        return str(self.tmp / self.products.names[key])

    def commit(self) -> None:
        for name in self.products.names.values():
            if (self.tmp / name).exists():
                os.replace(self.tmp / name, self.out_dir / name)

    def remove_products(self) -> None:
        for name in self.products.names.values():
            (self.out_dir / name).unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t0, 3)
        self._t0 = now


def load_atlas(reg_mm: float = 2.0) -> dict[str, ants.ANTsImage]:
    """SRI24 images; ``reg_fixed`` is the brain at ``reg_mm``: an affine needs no 1 mm metric
    (measured on IXI: 12.6 s vs 125 s, same NCC, 0.46 mm mean difference between the two transforms)."""
    a = atlas_paths()
    check_readable(a)  # ITK reads a truncated .nii.gz without complaint: every scan would "fail"
    atlas = {"t1": ants.image_read(str(a.t1)), "t1_brain": ants.image_read(str(a.t1_brain)),
             "mask": ants.image_read(str(a.brain_mask))}
    atlas["reg_fixed"] = (ants.resample_image(atlas["t1_brain"], (reg_mm,) * 3, use_voxels=False, interp_type=0)
                          if reg_mm != 1.0 else atlas["t1_brain"])
    return atlas


def read_head(path: str, params: ChainParams) -> tuple[ants.ANTsImage, ants.ANTsImage]:
    """Read, bring a finer-than-atlas scan to ~1 mm once, despike; the head mask on the scan's grid.

    The head mask is found on a ~4 mm grid of block means (Otsu, closing and hole filling took 17 s
    on a 1 mm grid under load, 0.2 s there) and copied back to the scan's grid, where it serves as
    N4's mask and HD-BET's crop box."""
    img = despike(to_working_resolution(read_scan(path), params.working_mm))
    factors = block_factors(img.spacing, HEAD_MASK_MM)
    small = head_mask(shrink(img, factors))
    head_ml = float(small.numpy().sum()) * float(np.prod(small.spacing)) / 1000.0
    if head_ml < MIN_HEAD_ML:  # e.g. a binary mask passed as a scan: Otsu finds no foreground
        raise ScanError(f"{path}: no head found ({head_ml:.0f} mL of foreground after Otsu thresholding; "
                        f"a head is > {MIN_HEAD_ML:.0f} mL)")
    return img, img.new_image_like(expand_nearest(small.numpy(), factors, img.shape).astype(np.float32))


def n4_head(path: str, params: ChainParams, timer: Timer) -> tuple[ants.ANTsImage, ants.ANTsImage]:
    """(bias-corrected scan, head mask), both on the scan's (possibly ~1 mm averaged) grid."""
    img, head = read_head(path, params)
    timer.step("read")
    corrected = n4(img, head, params.n4)
    timer.step("n4")
    return corrected, head


@stage("hdbet")
def strip(img: ants.ANTsImage, head: ants.ANTsImage, params: ChainParams) -> np.ndarray:
    """HD-BET on the head's bounding box (+margin), resampled once to the network's 1.5 mm grid
    here (one linear ANTs resampling; HD-BET's own cubic resize and its connected-component pass
    then have nothing to do); the mask comes back to the scan's grid by linear interpolation of the
    cleaned 1.5 mm mask, thresholded at 0.5."""
    idx = np.argwhere(head.numpy() > 0)
    margin = np.ceil(params.crop_margin_mm / np.asarray(img.spacing)).astype(int)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, img.shape)
    crop = ants.crop_indices(img, lo.tolist(), hi.tolist())
    mask = np.zeros(img.shape, bool)
    if params.hdbet_v2_checkpoint:  # nnU-Net plans its own resampling
        mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = brain_mask(crop, params.hdbet_mode, params.hdbet_device,
                                                                 params.hdbet_v2_checkpoint)
        return mask
    net = ants.resample_image(crop, (HDBET_MM,) * 3, use_voxels=False, interp_type=0)
    small = net.new_image_like(brain_mask(net, params.hdbet_mode, params.hdbet_device).astype(np.float32))
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = ants.resample_image_to_target(
        small, crop, interp_type="linear").numpy() > 0.5
    return mask


def prepare(raw: str, declared: inputs.Declared, params: ChainParams, timer: Timer,
            atlas: dict[str, ants.ANTsImage], hdbet: bool) -> tuple[ants.ANTsImage, np.ndarray | None, dict]:
    """Read, N4 and brain mask along the scan's route (preprocess/inputs.py).

    Returns the N4-corrected image (on the SRI24 grid when the input is), the brain mask (None
    when ``hdbet`` is False and the input is a raw head: a modality uses its T1's) and the
    record's route keys plus the mask's check numbers. A raw head is read twice (here for the
    route, then by n4_head): ~1 s on a 1 mm head, against HD-BET run on a stripped brain."""
    head = None
    img = read_scan(raw)
    stripped, why, frac = inputs.decide_stripped(declared, img)
    on_grid, grid_why = inputs.decide_grid(raw, declared, img)
    route = inputs.Route(stripped, why, on_grid, grid_why, frac).record()
    cp = params.check_params
    if stripped:
        timer.step("read")
        if on_grid:  # onto the atlas grid first: N4 then sees one image whatever the file's axis order/origin
            img, on_grid = inputs.to_sri24(img, atlas["t1"]), False
        mask, support = inputs.stripped_mask(raw, img)
        img = inputs.n4_in_mask(img, mask, params.n4)
        timer.step("n4")
        q = checks.check_mask(raw, "input", mask, img.numpy(), None, img.spacing, cp, support)
    else:
        with stage("head mask"):  # n4_head's own "no head found" check; read and n4 tag themselves
            img, head = n4_head(raw, params, timer)
        if hdbet:
            mask = strip(img, head, params)
            timer.step("hdbet")
            q = checks.check_mask(raw, "hdbet", mask, img.numpy(), head.numpy() > 0, img.spacing, cp)
        else:
            mask, q = None, {}
    if on_grid:  # a raw head on the SRI24 grid: N4 and HD-BET ran on it as read
        mask_img = img.new_image_like(mask.astype(np.float32)) if mask is not None else None
        img = inputs.to_sri24(img, atlas["t1"])
        mask = inputs.to_sri24(mask_img, atlas["t1"]).numpy() > 0.5 if mask_img is not None else None
    return img, mask, {"route": route, "qc": q}


def run_t1(raw: str, out_dir: Path, products: Products, params: ChainParams,
           atlas: dict[str, ants.ANTsImage], declared: inputs.Declared = NOTHING_DECLARED) -> dict:
    """Process a session's T1; returns the record body (outputs, qc, runtime_s). Raises ScanError on bad data."""
    timer = Timer()
    with Staging(out_dir, products) as st:
        img, mask, found = prepare(raw, declared, params, timer, atlas, hdbet=True)
        q = found["qc"]
        mask_img = img.new_image_like(mask.astype(np.float32))
        ref, ref_mask = atlas["t1_brain"].numpy(), atlas["mask"].numpy() > 0
        if found["route"]["input_route"].endswith("sri24"):  # already there: nothing to fit or resample
            inputs.identity_transform(st.path("xfm"))
            timer.step("register")
            amask, out = mask, np.clip(img.numpy(), 0, None) * mask
        else:  # brain to brain: the atlas side is the SRI24 brain, the scan side its masked N4 image
            with stage("register"):
                register(atlas["reg_fixed"], img * mask_img, params.t1_reg, st.path("xfm"), seed=params.seed)
                timer.step("register")
                q.update(checks.check_registration(raw, st.path("xfm"), params.check_params))
            xfm = [st.path("xfm")]
            warped = to_atlas(atlas["t1"], img, xfm).numpy()
            amask = to_atlas(atlas["t1"], mask_img, xfm, label=True).numpy() > 0.5
            out = np.clip(warped, 0, None) * amask
        timer.step("resample")
        q.update(ncc_atlas=qc.ncc(out, ref, ref_mask), nmi_atlas=qc.nmi(out, ref, ref_mask),
                 dice_atlas_mask=qc.dice(amask, ref_mask))
        checks.check_ncc(raw, q["ncc_atlas"], params.min_ncc_t1)
        save_ants(atlas["t1"].new_image_like(out.astype(np.float32)), st.path("volume"))
        save_ants(atlas["t1"].new_image_like(amask.astype(np.float32)), st.path("brain_mask"), np.uint8)
        save_ants(img, st.path("native_n4"))
        save_ants(mask_img, st.path("native_brain_mask"), np.uint8)
        qc.overlay_png(out, amask, st.path("png"), f"{products.names['volume']}  NCC {q['ncc_atlas']:.3f}")
        timer.step("write")
        st.commit()
    return {"outputs": dict(products.names), "transforms_to_atlas": [products.names["xfm"]], "qc": q,
            **found["route"], "runtime_s": {**timer.seconds, "total": round(sum(timer.seconds.values()), 3)}}


def run_modality(raw: str, t1_record: dict, t1_dir: Path, out_dir: Path, products: Products,
                 params: ChainParams, atlas: dict[str, ants.ANTsImage],
                 declared: inputs.Declared = NOTHING_DECLARED) -> dict:
    """Rigid modality -> native T1, composed with T1 -> atlas, resampled once; the T1's brain mask applies.

    On the SRI24 grid with a T1 that is too (BraTS: co-registered), no registration: identity."""
    timer = Timer()
    t1_out = t1_record["outputs"]
    with Staging(out_dir, products) as st:
        img, own_mask, found = prepare(raw, declared, params, timer, atlas, hdbet=False)
        t1 = ants.image_read(str(t1_dir / t1_out["native_n4"]))
        t1_mask = ants.image_read(str(t1_dir / t1_out["native_brain_mask"]))
        amask = ants.image_read(str(t1_dir / t1_out["brain_mask"])).numpy() > 0
        on_grid = found["route"]["input_route"].endswith("sri24") and t1_record.get("input_route", "").endswith("sri24")
        if on_grid:
            inputs.identity_transform(st.path("xfm"))
            timer.step("register")
            out = np.clip(img.numpy(), 0, None) * amask
        else:
            # registration metric restricted to the brain (+1 cm): skull/neck differ most between sequences;
            # a stripped modality is registered to the T1's brain (no skull on its side to match)
            dil = ndimage.binary_dilation(t1_mask.numpy() > 0, iterations=int(np.ceil(10 / min(t1.spacing))))
            fixed = t1 * t1_mask if own_mask is not None else t1
            with stage("register"):
                register(fixed, img, params.modality_reg, st.path("xfm"), fixed_mask=t1_mask.new_image_like(
                    dil.astype(np.float32)), seed=params.seed)
            timer.step("register")
            xfm = [str(t1_dir / t) for t in t1_record["transforms_to_atlas"]] + [st.path("xfm")]
            out = np.clip(to_atlas(atlas["t1"], img, xfm).numpy(), 0, None) * amask
        timer.step("resample")
        t1_atlas = ants.image_read(str(t1_dir / t1_out["volume"])).numpy()
        native_mask = t1_mask.numpy() > 0
        before = ants.resample_image_to_target(img, t1, interp_type="linear").numpy()  # header alignment only
        after = ants.apply_transforms(fixed=t1, moving=img, transformlist=[st.path("xfm")]).numpy()
        q = {**found["qc"], "brain_volume_ml": t1_record["qc"]["brain_volume_ml"],
             "nmi_atlas": qc.nmi(out, atlas["t1_brain"].numpy(), atlas["mask"].numpy() > 0),
             "dice_atlas_mask": t1_record["qc"]["dice_atlas_mask"],
             "nmi_t1_before": qc.nmi(before, t1.numpy(), native_mask),
             "nmi_t1_after": qc.nmi(after, t1.numpy(), native_mask),
             "nmi_t1_atlas": qc.nmi(out, t1_atlas, amask)}
        if q["nmi_t1_after"] < params.min_nmi_modality:
            raise ScanError(f"{raw}: register: registration to the session T1 failed (NMI {q['nmi_t1_after']:.3f} "
                            f"< min_nmi_modality {params.min_nmi_modality})")
        save_ants(atlas["t1"].new_image_like(out.astype(np.float32)), st.path("volume"))
        qc.overlay_png(out, amask, st.path("png"), f"{products.names['volume']}  NMI->T1 {q['nmi_t1_after']:.3f}")
        timer.step("write")
        st.commit()
    rel_t1 = os.path.relpath(t1_dir, out_dir)
    outputs = {**products.names, "brain_mask": os.path.normpath(os.path.join(rel_t1, t1_out["brain_mask"]))}
    transforms = [os.path.normpath(os.path.join(rel_t1, t)) for t in t1_record["transforms_to_atlas"]]
    return {"outputs": outputs, "transforms_to_atlas": transforms + [products.names["xfm"]], "qc": q,
            **found["route"], "runtime_s": {**timer.seconds, "total": round(sum(timer.seconds.values()), 3)}}


def write_record(path: Path, record: dict) -> None:
    """Atomic JSON write (the record is the Snakemake output: it must never be half-written)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)
