"""`braing3n bench preprocess`: time each chain step per scan, against the naive library-default chain.

Naive chain (what a user writes from the docs): ``ants.n4_bias_field_correction(img)`` (defaults,
no mask), HD-BET v1 ``accurate`` (5 folds + mirror TTA) and ``ants.registration(atlas, brain,
'Affine')`` (defaults, 1 mm atlas). Both chains run on the same scans in the same run, each scan
in its own forked process (``peak_rss_mb`` = that process's peak resident memory, the loaded
libraries and atlas included, as in a preprocessing job). Accuracy: atlas NCC (SRI24 brain inside
the atlas mask), Dice between the brain masks, and optionally

- ``--accurate``: HD-BET ``fast`` vs the 5-fold ``accurate`` ensemble on the same 1.5 mm input;
- ``--bias-reference``: N4's field on the ~4 mm working grid vs the fit on the scan's own grid
  (same iterations), relative error inside the head after removing the mean log ratio; and the
  working-grid fit vs one with 4x the iterations (are the iterations enough?).

Scans: ``--scans`` files, plus ``--phantom-1mm`` (a 1 mm phantom head generated on the fly) and
``--large`` (a real 2 mm IXI head upsampled to 512x512x400 at 0.47 mm, the size of a fine clinical
scan), written to a temp folder for the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.config import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared/data"
DEFAULT_SCANS = [SHARED / "tcga-fg-6692/t1.nii.gz", SHARED / "ixi-t1-2mm/IXI132-HH-1415_T1.nii.gz",
                 SHARED / "ixi-t1-2mm/IXI174-HH-1571_T1.nii.gz"]
LARGE_SOURCE = SHARED / "ixi-t1-2mm/IXI174-HH-1571_T1.nii.gz"


def in_child(fn, *args) -> dict:
    """``fn(*args)`` (a dict) in a forked process; adds its peak RSS. Memory of one scan, not the run."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            out = {"ok": True, **fn(*args)}
        except Exception as exc:  # the row says what failed; the benchmark goes on
            out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
        with os.fdopen(w, "wb") as fh:
            pickle.dump(out, fh)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return pickle.loads(data) if data else {"ok": False, "error": "benchmark child died (out of memory?)"}


def _ours(path: str, atlas: dict, params, accurate: bool, bias_reference: bool) -> dict:
    from braing3n.preprocess import chain, qc
    from braing3n.preprocess.register import register, to_atlas

    t = chain.Timer()
    img, head = chain.n4_head(path, params, t)
    mask = chain.strip(img, head, params)
    t.step("hdbet")
    m = img.new_image_like(mask.astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        mat = register(atlas["reg_fixed"], img * m, params.t1_reg, os.path.join(tmp, "x.mat"), seed=params.seed)
        t.step("register")
        out = to_atlas(atlas["t1"], img * m, [mat]).numpy()
        t.step("resample")
    res = {"seconds": t.seconds, "mask": mask, "grid": f"{'x'.join(map(str, img.shape))} @ "
           f"{'x'.join(f'{s:.2f}' for s in img.spacing)} mm",
           "ncc": qc.ncc(out, atlas["t1_brain"].numpy(), atlas["mask"].numpy() > 0)}
    if accurate:
        res["dice_fast_vs_accurate"] = qc.dice(mask, chain.strip(img, head, dataclasses.replace(
            params, hdbet_mode="accurate")))
    if bias_reference:
        res.update(bias_errors(path, params))
    return res


def field_error(a: np.ndarray, b: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """Mean and 99th percentile of |a/b - 1| (%) inside, once the mean log ratio is removed (N4's
    field is defined up to a constant factor)."""
    d = np.log(a[inside]) - np.log(b[inside])
    e = np.abs(np.expm1(d - d.mean())) * 100
    return round(float(e.mean()), 3), round(float(np.percentile(e, 99)), 3)


def bias_errors(path: str, params) -> dict:
    """Working-grid field vs the fit on the scan's own grid and vs 4x the iterations."""
    from braing3n.preprocess import chain
    from braing3n.preprocess.n4 import bias_field

    raw, head = chain.read_head(path, params)
    inside = head.numpy() > 0
    t0 = time.perf_counter()
    work = bias_field(raw, head, params.n4)
    t1 = time.perf_counter()
    full = bias_field(raw, head, params.n4, factors=(1, 1, 1))
    t2 = time.perf_counter()
    long = bias_field(raw, head, dataclasses.replace(params.n4, iterations=tuple(4 * i for i in params.n4.iterations)))
    (m_full, p_full), (m_long, p_long) = field_error(work, full, inside), field_error(work, long, inside)
    return {"bias_err_vs_full_mean_pct": m_full, "bias_err_vs_full_p99_pct": p_full,
            "bias_err_vs_4x_iters_mean_pct": m_long, "bias_err_vs_4x_iters_p99_pct": p_long,
            "n4_fit_work_s": round(t1 - t0, 2), "n4_fit_full_s": round(t2 - t1, 2),
            "bias_range_pct": round(float(np.ptp(np.log(full[inside]))) * 100, 1)}


def _naive(path: str, atlas: dict, device, ours_mask: np.ndarray, hdbet_mode: str = "accurate") -> dict:
    import ants

    from braing3n.preprocess import chain, qc
    from braing3n.preprocess.io import read_scan
    from braing3n.preprocess.skullstrip import hdbet_v1

    t = chain.Timer()
    img = read_scan(path)
    t.step("read")
    img = ants.n4_bias_field_correction(img)
    t.step("n4")
    mask = hdbet_v1(img, hdbet_mode, device)  # the same device as the pipeline's chain: a ratio, not CPU vs GPU
    t.step("hdbet")
    brain = img * img.new_image_like(mask.astype(np.float32))
    reg = ants.registration(atlas["t1_brain"], brain, "Affine")
    t.step("register")
    out = ants.apply_transforms(atlas["t1"], brain, reg["fwdtransforms"]).numpy()
    t.step("resample")
    # the pipeline may have averaged a fine scan to ~1 mm: compare the masks on the naive grid
    ref = ours_mask if ours_mask.shape == mask.shape else None
    return {"seconds": t.seconds, "mask": mask, "grid": f"{'x'.join(map(str, img.shape))}",
            "ncc": qc.ncc(out, atlas["t1_brain"].numpy(), atlas["mask"].numpy() > 0),
            "dice_vs_pipeline": qc.dice(mask, ref) if ref is not None else float("nan")}


def make_phantom_1mm(folder: Path) -> str:
    """One 1 mm phantom T1 (PSR, the generator's bias, noise and pose; seed 3)."""
    from braing3n.phantom.generate import generate_cohort
    from braing3n.phantom.plan import plan_cohort

    spec = {"mapping": str(REPO_ROOT / "config/cohorts/phantommem.yaml"), "root": str(folder / "phantom"),
            "phantom": {"style": "adni", "n_subjects": 1, "n_longitudinal": 0, "modalities": {"T1": 1},
                        "voxel_sizes": {"1": 1}, "orientations": {"PSR": 1}}}
    config = {"phantom": {"seed": 3}, "seed": 0}
    plan = plan_cohort("bench1mm", spec, config)
    generate_cohort(plan, config, log=lambda *a: None)
    return str(plan.scans[0].path)


def make_large(folder: Path, source: Path = LARGE_SOURCE, shape=(512, 512, 400), mm: float = 0.47) -> str:
    """A real 2 mm head upsampled (linear) to ``shape`` at ``mm``, centred, stored as int16."""
    import ants
    import nibabel as nib

    from braing3n.preprocess.io import load_nifti, to_ants

    img = to_ants(load_nifti(source))
    up = ants.resample_image(img, (mm,) * 3, use_voxels=False, interp_type=0).numpy()
    out = np.zeros(shape, np.int16)
    src = [slice(max(0, (u - s) // 2), max(0, (u - s) // 2) + min(u, s)) for u, s in zip(up.shape, shape, strict=True)]
    dst = [slice(max(0, (s - u) // 2), max(0, (s - u) // 2) + min(u, s)) for u, s in zip(up.shape, shape, strict=True)]
    out[tuple(dst)] = np.round(up[tuple(src)]).astype(np.int16)
    aff = np.diag([mm, mm, mm, 1.0])
    aff[:3, 3] = -np.asarray(shape) * mm / 2
    path = folder / f"large_{'x'.join(map(str, shape))}_{mm}mm.nii.gz"
    nib.save(nib.Nifti1Image(out, aff), str(path))
    return str(path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n bench preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench")
    p.add_argument("--name", default="preprocess", help="table file stem under --out")
    p.add_argument("--scans", nargs="*", default=[str(s) for s in DEFAULT_SCANS], help="raw T1 NIfTI files")
    p.add_argument("--phantom-1mm", action="store_true", help="add a 1 mm phantom head generated on the fly")
    p.add_argument("--large", action="store_true", help="add a 512x512x400 0.47 mm head (upsampled IXI174)")
    p.add_argument("--configfile", action="append", default=[])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-naive", action="store_true", help="time only the pipeline's chain")
    p.add_argument("--naive-hdbet", choices=("accurate", "fast"), default="accurate",
                   help="the naive chain's HD-BET (fast: when 40 CPU forward passes per head do not fit)")
    p.add_argument("--accurate", action="store_true", help="also run 5-fold accurate HD-BET on the pipeline's input")
    p.add_argument("--bias-reference", action="store_true", help="N4 working-grid field vs the full-resolution fit")
    args = p.parse_args(argv)
    from braing3n.preprocess import chain
    from braing3n.preprocess.cli import load_pipeline_config, set_threads
    from braing3n.preprocess.skullstrip import resolve_device
    from braing3n.provenance import provenance, write_table

    missing = [s for s in args.scans if not Path(s).exists()]
    if missing and args.scans == [str(s) for s in DEFAULT_SCANS]:
        print(f"braing3n bench preprocess: skipped: the default scan {missing[0]} is not here "
              "(../shared/data of the development tree); give --scans raw_T1.nii.gz", file=sys.stderr)
        return 0
    if missing:
        print(f"braing3n bench preprocess: {missing[0]}: scan not found", file=sys.stderr)
        return 1
    set_threads(args.threads)
    config = load_pipeline_config(args.configfile)
    params = chain.ChainParams.from_config(config)
    device = resolve_device(params.hdbet_device)  # one device for both chains, named in the table
    params = dataclasses.replace(params, hdbet_device="cpu" if device == "cpu" else "cuda")
    atlas = chain.load_atlas(params.atlas_mm)
    rows = []
    with tempfile.TemporaryDirectory(prefix="braing3n-bench-") as tmp:
        scans = [(s, Path(s).name if "ixi" not in s else Path(s).name.split("-")[0]) for s in args.scans]
        if args.phantom_1mm:
            scans.append((make_phantom_1mm(Path(tmp)), "phantom 1 mm"))
        if args.large:
            scans.append((make_large(Path(tmp)), "IXI174 upsampled 0.47 mm"))
        for scan, label in scans:
            import nibabel as nib

            hdr = nib.load(scan)
            size = {"input": label, "input_grid": f"{'x'.join(map(str, hdr.shape[:3]))} @ "
                    f"{'x'.join(f'{z:.2f}' for z in hdr.header.get_zooms()[:3])} mm",
                    "input_mvox": round(float(np.prod(hdr.shape[:3])) / 1e6, 2)}
            ours = in_child(_ours, scan, atlas, params, args.accurate, args.bias_reference)
            runs = [("pipeline", ours)]
            if not args.no_naive and ours["ok"]:
                runs.append(("naive", in_child(_naive, scan, atlas, device, ours["mask"], args.naive_hdbet)))
            for name, res in runs:
                row = {**size, "chain": name if name == "pipeline" else f"naive (HD-BET {args.naive_hdbet})",
                       "hdbet_device": params.hdbet_device, "status": "ok" if res["ok"]
                       else res["error"], "work_grid": res.get("grid", "")}
                if res["ok"]:
                    row.update({f"{k}_s": v for k, v in res["seconds"].items()})
                    row.update(total_s=round(sum(res["seconds"].values()), 2), ncc_atlas=round(res["ncc"], 4))
                    row.update({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()
                                if k.startswith(("bias_", "n4_fit", "dice_"))})
                    if name == "pipeline":
                        row["dice_vs_pipeline"] = 1.0
                row["peak_rss_mb"] = res["peak_rss_mb"]
                rows.append(row)
                print(row, flush=True)
    df = pd.DataFrame(rows)
    naive = f"naive (HD-BET {args.naive_hdbet})"
    if not args.no_naive and "total_s" in df and (df["chain"] == naive).any():
        tot = df.pivot_table(index="input", columns="chain", values="total_s")
        if naive in tot:
            ratio = (tot[naive] / tot["pipeline"]).rename("speedup")
            df = df.merge(ratio, left_on="input", right_index=True, how="left")
    out = Path(args.out) / f"{args.name}.csv"
    prov = provenance(config, seed=params.seed, scans=len(scans), threads=args.threads)
    prov["date"] = time.strftime("%Y-%m-%d", time.gmtime())  # a benchmark is a dated measurement
    write_table(df, out, prov)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
