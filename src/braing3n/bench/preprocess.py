"""`braing3n bench preprocess`: time each chain step per scan, against the naive library-default chain.

Naive chain (what a user writes from the docs): ``ants.n4_bias_field_correction(img)`` (defaults,
no mask), HD-BET v1 ``accurate`` (5 folds + mirror TTA) and ``ants.registration(atlas, brain,
'Affine')`` (defaults, 1 mm atlas). Both chains run on the same scans in the same process;
accuracy = NCC with the SRI24 brain inside the atlas mask and Dice between the two brain masks.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.config import REPO_ROOT

DEFAULT_SCANS = [REPO_ROOT.parent / "shared/data/orientation/RAS.nii.gz"]


def _ours(path: str, atlas: dict, params) -> dict:
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
    return {"seconds": t.seconds, "mask": mask,
            "ncc": qc.ncc(out, atlas["t1_brain"].numpy(), atlas["mask"].numpy() > 0)}


def _naive(path: str, atlas: dict, device) -> dict:
    import ants

    from braing3n.preprocess import chain, qc
    from braing3n.preprocess.io import read_scan
    from braing3n.preprocess.skullstrip import hdbet_v1

    t = chain.Timer()
    img = read_scan(path)
    t.step("read")
    img = ants.n4_bias_field_correction(img)
    t.step("n4")
    mask = hdbet_v1(img, "accurate", device)  # the same device as the pipeline's chain: a ratio, not CPU vs GPU
    t.step("hdbet")
    brain = img * img.new_image_like(mask.astype(np.float32))
    reg = ants.registration(atlas["t1_brain"], brain, "Affine")
    t.step("register")
    out = ants.apply_transforms(atlas["t1"], brain, reg["fwdtransforms"]).numpy()
    t.step("resample")
    return {"seconds": t.seconds, "mask": mask,
            "ncc": qc.ncc(out, atlas["t1_brain"].numpy(), atlas["mask"].numpy() > 0)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="braing3n bench preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench")
    p.add_argument("--scans", nargs="+", default=[str(s) for s in DEFAULT_SCANS], help="raw T1 NIfTI files")
    p.add_argument("--configfile", action="append", default=[])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-naive", action="store_true", help="time only the pipeline's chain")
    args = p.parse_args(argv)
    from braing3n.preprocess import chain, qc
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
    for scan in args.scans:
        ours = _ours(scan, atlas, params)
        runs = [("pipeline", ours)] + ([] if args.no_naive else [("naive", _naive(scan, atlas, device))])
        for name, res in runs:
            rows.append({"scan": str(scan), "chain": name, "hdbet_device": params.hdbet_device,
                         **{f"{k}_s": v for k, v in res["seconds"].items()},
                         "total_s": round(sum(res["seconds"].values()), 2), "ncc_atlas": round(res["ncc"], 4),
                         "mask_dice_vs_pipeline": round(qc.dice(res["mask"], ours["mask"]), 4)})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    if not args.no_naive:
        tot = df.pivot(index="scan", columns="chain", values="total_s")
        ratio = (tot["naive"] / tot["pipeline"]).rename("speedup")
        df = df.merge(ratio, left_on="scan", right_index=True)
    out = Path(args.out) / "preprocess.csv"
    write_table(df, out, provenance(config, seed=params.seed, scans=len(args.scans), threads=args.threads))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
