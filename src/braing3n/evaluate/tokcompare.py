"""MAE tokenizer vs AutoencoderKL at several bottleneck sizes, one table.

Per tokenizer: bottleneck (numbers per position, positions), reconstruction L1 / PSNR / SSIM inside
the brain (``reconstruction_metrics``, as in reconstruction.csv) on the same held-out scans, and
linear probes (``evaluate.tokenizers.tasks``, default IDH1 and tumour grade) on the latent grid
pooled exactly as the guidance probes (both latents are 10x12x10 x C grids, so the same pooling
applies).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from braing3n.evaluate import guidance, tasks
from braing3n.evaluate.probes import run_probe
from braing3n.tokenizer.reconstruct import pick_eval_scans, reconstruction_metrics


def probe_columns(manifest: pd.DataFrame, scan_ids: np.ndarray, feats: np.ndarray, panel: list, seed: int,
                  n_splits: int, n_boot: int) -> dict:
    """AUROC (classification) or Pearson r (regression) with CI per task, 'skipped: reason' otherwise."""
    out = {}
    pos = {s: i for i, s in enumerate(scan_ids)}
    for task in panel:
        df, why = tasks.select_rows(manifest, task)
        df = df[df["scan_id"].isin(pos)] if not why else df
        if not why:
            why = tasks.check_size(df, task)
        metric = "auroc" if task.kind == "classification" else "pearson_r"
        if why:
            out[f"{task.name}_{metric}"] = f"skipped: {why}"
            continue
        x = feats[[pos[s] for s in df["scan_id"]]]
        res = run_probe(x, df["y"].to_numpy(), df["subject_id"].to_numpy(), task.kind, n_splits, seed, n_boot)
        lo, hi = res.ci.get(metric, (np.nan, np.nan))
        out[f"{task.name}_{metric}"] = round(res.metrics[metric], 4)
        out[f"{task.name}_{metric}_ci"] = f"[{lo:.3f}, {hi:.3f}]"
    return out


def run_tokenizers(config: dict, aekl_dirs: list[str], out: str) -> None:
    from braing3n.data.loader import VolumeDataset, zscore
    from braing3n.data.store import read_index
    from braing3n.evaluate.stages import cohorts, device_of, layout, read_manifest, real_latents
    from braing3n.models.aekl import encode_tokens, load_aekl
    from braing3n.paths import model_dir_for
    from braing3n.provenance import provenance, write_table
    from braing3n.tokenizer import load_tokenizer

    ev, tc = config["evaluate"], config["evaluate"]["tokenizers"]
    dev, seed = device_of(config), config["seed"]
    manifest = read_manifest(config)
    panel = [t for t in tasks.load_panel(ev["probes_panel"]) if t.name in tc["tasks"]]
    pool = ev["guidance"]["latent_pool"]
    index = read_index([layout(config).store_index(c) for c in cohorts(config)])
    index = index[index["scan_id"].isin(set(manifest["scan_id"]))].sort_values("scan_id").reset_index(drop=True)
    # the scans reconstruction.csv scores (train.decoder.eval_split), picked the same way
    split = index["scan_id"].map(manifest.set_index("scan_id")["split"]).astype(str)
    eval_split = config["train"]["decoder"]["eval_split"]
    held = index[(split == eval_split).to_numpy()]
    if not len(held):
        raise ValueError(f"evaluate tokenizers: no store scan is in split {eval_split!r} (train.decoder.eval_split)")
    who = manifest.set_index("scan_id")[["cohort", "subject_id"]]
    recon_rows = pick_eval_scans(held.drop(columns=["cohort", "subject_id"], errors="ignore").join(who, on="scan_id"),
                                 tc["max_scans"], seed)
    recon_set = VolumeDataset(recon_rows)
    # probes only need the scans of the probed tasks
    wanted = set()
    for task in panel:
        df, why = tasks.select_rows(manifest, task)
        wanted |= set(df["scan_id"]) if not why else set()
    probe_rows = index[index["scan_id"].isin(wanted)].reset_index(drop=True)

    def score(encode, decode) -> dict:
        metrics = []
        for i in range(len(recon_set)):
            vol = zscore(recon_set[i][None])
            rec = decode(encode(vol))
            v, r = vol[0, 0].numpy(), rec[0, 0].float().cpu().numpy()
            metrics.append(reconstruction_metrics(v, r))
        return {k: float(np.mean([m[k] for m in metrics])) for k in ("l1", "psnr", "ssim")} if metrics else {}

    rows = []
    tok = load_tokenizer(model_dir_for(config, "decoder"), dev)
    real, lat = real_latents(config)
    c = lat.shape[2]
    row = {"tokenizer": "mae", "dims_per_position": c, "positions": lat.shape[1], "latent_numbers": lat.shape[1] * c,
           "n_recon": len(recon_set)}
    row.update(score(lambda v: tok.encode(v)["latent"], tok.decode))
    row.update(probe_columns(manifest, real["scan_id"].to_numpy(), guidance.latent_features(lat, pool), panel, seed,
                             ev["n_splits"], ev["n_boot"]))
    rows.append(row)
    for d in sorted(aekl_dirs):
        model, acfg = load_aekl(d, dev)

        def enc(v, model=model):
            with torch.no_grad():
                return model.encode(v.to(dev))[0]

        def dec(z, model=model):
            with torch.no_grad():
                return model.decode(z)

        row = {"tokenizer": f"aekl_{acfg.latent_channels}", "dims_per_position": acfg.latent_channels}
        probe_set = VolumeDataset(probe_rows) if len(probe_rows) else None
        toks = np.concatenate([encode_tokens(model, zscore(probe_set[i][None]).to(dev)).cpu().numpy()
                               for i in range(len(probe_set))]) if probe_set else np.zeros((0, 1200, 1))
        row.update({"positions": toks.shape[1] if len(toks) else np.nan,
                    "latent_numbers": toks.shape[1] * acfg.latent_channels if len(toks) else np.nan,
                    "n_recon": len(recon_set)})
        row.update(score(enc, dec))
        if len(toks):
            row.update(probe_columns(manifest, probe_rows["scan_id"].to_numpy(), guidance.latent_features(toks, pool),
                                     panel, seed, ev["n_splits"], ev["n_boot"]))
        rows.append(row)
    prov = provenance(config, seed=seed, tokenizers=len(rows), recon_scans=len(recon_set))
    write_table(pd.DataFrame(rows), out, prov)
