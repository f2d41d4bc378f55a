"""`braing3n forecast`: a patient's follow-up scan from a baseline scan and a horizon in years.

    braing3n forecast --baseline scan.nii.gz --years 3 --age 71 --disease MCI --sex F --out DIR \\
        [--configfile config/demo.yaml]
    braing3n forecast --baseline auto --configfile config/demo.yaml --years 3 --out DIR

The baseline is used as is when it is already an SRI24 atlas-space volume (240x240x155 with the
atlas affine); any other T1 goes through the preprocessing chain first. It is then cropped to
160x192x160 and z-scored like the store, encoded by the tokenizer, and the longitudinal DiT
samples the follow-up latent. ``auto`` picks the first held-out (test, else val) pair's baseline
T1 from the manifest and takes its age/diagnosis/sex from there.

Outputs in DIR: baseline.nii.gz (model input, z-scored), baseline_recon.nii.gz (tokenizer
reconstruction), forecast.nii.gz (mean of --n samples), difference.nii.gz = forecast -
baseline_recon (both decoded, so reconstruction error cancels), forecast.png and forecast.csv.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from braing3n.paths import Layout

SCAN_ID = re.compile(r"^(?P<cohort>[A-Za-z0-9]+)_sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)_"
                     r"(?P<modality>T1|T2|FLAIR|T1c)$")


def is_atlas_space(img: nib.Nifti1Image) -> bool:
    from braing3n.atlas import AFFINE, SHAPE

    return (tuple(img.shape[:3]) == SHAPE and tuple(img.shape[3:]) in ((), (1,))
            and np.allclose(img.affine, AFFINE, atol=1e-3))


def atlas_path_of(scan_id: str, layout: Layout) -> Path:
    """Preprocessed atlas-space volume of a scan_id (cohort_sub-X_ses-Y_MOD)."""
    m = SCAN_ID.match(scan_id)
    if m is None:
        raise ValueError(f"scan_id {scan_id!r} is not of the form cohort_sub-S_ses-T_MODALITY")
    return Path(layout.atlas_volume(m["cohort"], m["subject"], m["session"], m["modality"]))


def pick_heldout_baseline(layout: Layout) -> dict:
    """First pair (sorted) whose subject is in the test split (else val) and has a T1 at both sessions."""
    pairs_path = layout.pairs
    if not Path(pairs_path).exists():
        raise FileNotFoundError(f"{pairs_path}: pairs table missing; run the metadata stage first")
    pairs = pd.read_parquet(pairs_path).dropna(subset=["baseline_scan_id_T1", "followup_scan_id_T1"])
    for split in ("test", "val"):
        held = pairs[pairs["split"].astype(str) == split].sort_values(["subject_id", "baseline_session"])
        if len(held):
            row = held.iloc[0]
            return {"scan_id": str(row["baseline_scan_id_T1"]), "followup_scan_id": str(row["followup_scan_id_T1"]),
                    "age": row.get("age_baseline"), "disease": row.get("diagnosis_baseline"), "sex": row.get("sex"),
                    "modality": "T1", "true_years": float(row["interval_years"])}
    raise ValueError(f"{pairs_path}: no held-out (test/val) subject with T1 at two sessions")


def read_scan(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """(image, float32 3D voxels) of a scan, or one line naming the file and what is wrong with it
    (nibabel only: the atlas-space path needs no ANTs/SimpleITK)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: baseline scan not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]  # a singleton 4th axis
    if data.ndim != 3:
        raise ValueError(f"{path}: {data.ndim}D image of shape {data.shape}; expected one 3D volume")
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: {int((~np.isfinite(data)).sum())} NaN/Inf voxels")
    return img, data


def on_atlas_grid(img: nib.Nifti1Image, data: np.ndarray) -> np.ndarray | None:
    """The voxels on the SRI24 LPS grid when the image already covers it voxel for voxel in any
    axis order (e.g. an atlas-space scan saved as RAS by another tool): a lossless reorientation,
    as the store does. None otherwise (then it is a raw scan)."""
    from braing3n.atlas import SHAPE, to_lps_grid

    if sorted(img.shape[:3]) != sorted(SHAPE):
        return None
    try:
        return to_lps_grid(nib.Nifti1Image(data, img.affine))  # the voxels read_scan has read already
    except ValueError:
        return None


def load_baseline(path: Path, work_dir: Path, config: dict | None) -> np.ndarray:
    """Atlas-grid float32 volume; raw scans run through the preprocessing chain into work_dir."""
    grid = on_atlas_grid(*read_scan(path))
    if grid is None:
        path = preprocess_raw_t1(path, work_dir, config)
        grid = on_atlas_grid(*read_scan(path))
        if grid is None:
            raise ValueError(f"{path}: preprocessing did not produce an SRI24 atlas-space volume")
    return grid


def preprocess_raw_t1(path: Path, work_dir: Path, config: dict | None) -> Path:
    """N4 -> HD-BET -> SRI24 affine -> clip -> QC with the preprocess stage's T1 chain (its config section);
    the products (atlas-space volume, masks, transform, QC PNG) stay in work_dir/baseline_preprocessed."""
    from braing3n.preprocess import chain
    from braing3n.preprocess.io import ScanError
    from braing3n.preprocess.skullstrip import HDBETMissingError

    out_dir = work_dir / "baseline_preprocessed"
    products = chain.Products("baseline", "0", "T1")
    params = chain.ChainParams.from_config(config or {})
    try:
        chain.run_t1(str(path), out_dir, products, params, chain.load_atlas(params.atlas_mm))
    except ScanError as exc:
        raise ValueError(f"{path}: preprocessing failed: {str(exc).splitlines()[0]}") from exc
    except HDBETMissingError as exc:
        raise ValueError(f"{path}: not in SRI24 atlas space, and the skull-stripping weights to preprocess it "
                         f"are missing: {str(exc).splitlines()[0]}") from exc
    return out_dir / products.names["volume"]


def model_input(vol_atlas: np.ndarray) -> torch.Tensor:
    """Crop to 160x192x160 and z-score over brain voxels exactly like the store + loader."""
    from braing3n.data.geometry import crop_to_model
    from braing3n.data.loader import zscore

    v = torch.from_numpy(np.clip(crop_to_model(vol_atlas), 0, None).astype(np.float32))[None, None]
    return zscore(v)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="braing3n forecast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="baseline scan (.nii/.nii.gz; raw or atlas-space) or 'auto'")
    p.add_argument("--years", type=float, help="forecast horizon in years (default: generate.forecast_years, 3)")
    p.add_argument("--configfile", action="append", help="pipeline config(s) for defaults (repeatable)")
    p.add_argument("--model-dir", help="longitudinal DiT folder (default {results}/models/dit_long)")
    p.add_argument("--tokenizer-dir", help="tokenizer folder (default {results}/models/decoder)")
    p.add_argument("--age", type=float, help="age at baseline (years)")
    p.add_argument("--disease", help="diagnosis at baseline")
    p.add_argument("--sex", choices=["F", "M"])
    p.add_argument("--modality", choices=["T1", "T2", "FLAIR", "T1c"],
                   help="modality of the baseline (default T1, when the model takes modality)")
    p.add_argument("--n", type=int, help="samples averaged into the forecast (default: generate.forecast_n, 1)")
    p.add_argument("--cfg", type=float, dest="cfg_scale", help="guidance scale (default: 1 = conditional)")
    p.add_argument("--steps", type=int, help="ODE steps (default: generate.steps, 50)")
    p.add_argument("--solver", choices=["euler", "heun"])
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from braing3n.config import ConfigError
    from braing3n.generate.cli import load_optional_config, resolve_dirs

    try:
        config = load_optional_config(args.configfile)
    except ConfigError as exc:
        print(f"braing3n forecast: {exc}", file=sys.stderr)
        return 2
    gen_cfg = (config or {}).get("generate", {})
    model_dir, tok_dir = resolve_dirs(config, "dit_long")
    model_dir, tok_dir = args.model_dir or model_dir, args.tokenizer_dir or tok_dir
    if model_dir is None or tok_dir is None:
        print("braing3n forecast: give --configfile, or --model-dir and --tokenizer-dir", file=sys.stderr)
        return 2
    conditions = {"age": args.age, "disease": args.disease, "sex": args.sex, "modality": args.modality}
    info: dict = {}
    from_table: set[str] = set()  # conditions filled from the pairs table, not given as flags
    baseline = args.baseline
    try:
        if baseline == "auto":
            if config is None:
                raise ValueError("--baseline auto needs --configfile (it reads the manifest and pairs)")
            lay = Layout(config.get("results", "results"))
            info = pick_heldout_baseline(lay)
            baseline = str(atlas_path_of(info["scan_id"], lay))
            for k in ("age", "disease", "sex"):  # flags given on the command line win
                if conditions[k] is None and not pd.isna(info[k]):
                    conditions[k] = info[k]
                    from_table.add(k)
        run(Path(baseline), model_dir, tok_dir, {k: v for k, v in conditions.items() if v is not None},
            optional=from_table,
            years=args.years if args.years is not None else float(gen_cfg.get("forecast_years", 3.0)),
            n=args.n if args.n is not None else int(gen_cfg.get("forecast_n", 1)),
            cfg_scale=args.cfg_scale if args.cfg_scale is not None else 1.0,
            steps=args.steps if args.steps is not None else int(gen_cfg.get("steps", 50)),
            solver=args.solver or gen_cfg.get("solver", "heun"),
            seed=args.seed if args.seed is not None else int((config or {}).get("seed", 0)),
            out=Path(args.out), device=args.device or (config or {}).get("device", "auto"), config=config, info=info)
    except (FileNotFoundError, ValueError) as exc:
        print(f"braing3n forecast: {exc}", file=sys.stderr)
        return 1
    return 0


def run(baseline: Path, model_dir: str, tokenizer_dir: str, conditions: dict, years: float, n: int,
        cfg_scale: float, steps: int, solver: str, seed: int, out: Path, device: str = "auto",
        config: dict | None = None, info: dict | None = None, optional: set[str] | frozenset = frozenset()) -> Path:
    """Forecast ``baseline`` + ``years`` into ``out``; ``optional`` names conditions that may be
    dropped when the model does not take them (filled in for --baseline auto, not asked for)."""
    from braing3n.generate.cli import building, check_out_dir, load_tokenizer
    from braing3n.generate.sampler import load_generator, sample_latents

    if not (np.isfinite(years) and years >= 0):
        raise ValueError(f"--years {years}: the horizon must be a finite number of years >= 0")
    if n < 1 or steps < 1:
        raise ValueError(f"--n {n}, --steps {steps}: each must be at least 1")
    if "age" in conditions and not np.isfinite(float(conditions["age"])):
        raise ValueError(f"--age {conditions['age']}: the age must be a finite number")
    out = check_out_dir(out, inputs=(baseline,))  # before the slow part, never deleting a user's folder
    gen = load_generator(model_dir, device)
    if gen.kind != "dit_long":
        raise ValueError(f"{model_dir}: a {gen.kind!r} model; forecasting needs the longitudinal model (dit_long)")
    untaken = sorted(set(conditions) - set(gen.conditions) - set(optional))
    if untaken:  # said, not silently dropped: the forecast would not be the one asked for
        raise ValueError(f"{model_dir}: this model does not take {untaken} (it takes {sorted(gen.conditions)})")
    cond = {k: v for k, v in conditions.items() if k in gen.conditions}
    if "modality" in gen.conditions and "modality" not in cond:
        cond["modality"] = "T1"
    gen.vocab.encode_request(cond, 1)  # a value the model never saw fails here, before the slow part
    cond["years"] = years
    tok = load_tokenizer(tokenizer_dir, device)
    with building(out) as tmp:
        x = model_input(load_baseline(baseline, tmp, config))
        with torch.no_grad():
            base_latent = tok.encode(x.to(getattr(tok, "device", "cpu")))["latent"].float().cpu()  # [1, 1200, 32]
        lat = sample_latents(gen, cond, n=n, cfg_scale=cfg_scale, steps=steps, solver=solver, seed=seed,
                             context=base_latent)
        _write_forecast(tmp, x, tok, base_latent, lat, years, cond, baseline, n, seed, cfg_scale, steps, solver,
                        config, info)
    print(f"braing3n forecast: +{years:g} y from {baseline} -> {out}")
    return out


def _write_forecast(tmp: Path, x: torch.Tensor, tok, base_latent: torch.Tensor, lat: torch.Tensor, years: float,
                    cond: dict, baseline: Path, n: int, seed: int, cfg_scale: float, steps: int, solver: str,
                    config: dict | None, info: dict | None) -> None:
    from braing3n.data.geometry import uncrop_to_atlas, write_atlas_nifti
    from braing3n.generate.volumes import decode_latents, save_mosaic
    from braing3n.provenance import provenance, write_table

    recon = decode_latents(tok, base_latent)[0]
    forecast = decode_latents(tok, lat).mean(0)
    diff = forecast - recon
    inp = uncrop_to_atlas(x[0, 0].numpy())
    for name, vol in (("baseline", inp), ("baseline_recon", recon), ("forecast", forecast), ("difference", diff)):
        write_atlas_nifti(vol, tmp / f"{name}.nii.gz")
    save_mosaic([inp, recon, forecast, diff], tmp / "forecast.png",
                titles=["baseline (model input)", "baseline (tokenizer reconstruction)",
                        f"forecast +{years:g} y", "forecast - reconstruction"],
                cmaps=["gray", "gray", "gray", "coolwarm"], symmetric=[False, False, False, True])
    np.save(tmp / "forecast_latents.npy", lat.numpy())
    row = {"baseline": str(baseline), "years": years, "n": n, "seed": seed, "cfg_scale": cfg_scale, "steps": steps,
           "solver": solver, **{f"cond_{k}": v for k, v in cond.items() if k != "years"},
           "mean_abs_difference": float(np.abs(diff).mean()), **(info or {})}
    write_table(pd.DataFrame([row]), tmp / "forecast.csv", provenance(config, seed=seed))
