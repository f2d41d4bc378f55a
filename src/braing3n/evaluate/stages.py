"""Pipeline stages of the evaluation: read upstream artefacts, call the metric modules, write tables.

Every table goes through ``braing3n.provenance.write_table`` (git commit, config hash, package
versions, seed, counts); nothing time-dependent is written, so a rerun gives identical bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braing3n.config import aekl_bottleneck
from braing3n.evaluate import compare, guidance, tasks
from braing3n.paths import Layout, model_dir_for
from braing3n.provenance import provenance, read_table, write_parquet, write_table


def layout(config: dict) -> Layout:
    return Layout(config.get("results", "results"))


def cohorts(config: dict) -> list[str]:
    return sorted(c for c, spec in config["cohorts"].items() if spec.get("enabled", True))


def read_manifest(config: dict) -> pd.DataFrame:
    path = Path(layout(config).manifest)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest missing; run the metadata stage (`braing3n manifest`) first")
    return pd.read_parquet(path)


def device_of(config: dict) -> torch.device:
    from braing3n.train.distributed import pick_device

    return pick_device(config.get("device", "auto"))


def _atomic_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp." + path.name)
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)


def mae_config_of(config: dict) -> dict | None:
    """The trained tokenizer's MAE architecture (for the random floor), when the decoder folder exists."""
    cfg = Path(model_dir_for(config, "decoder")) / "config.json"
    return json.loads(cfg.read_text())["model"]["mae"] if cfg.exists() else None


# --- embeddings of baseline encoders -------------------------------------------------------------

def run_embed(config: dict, encoder: str, cohort: str, out: str) -> None:
    """Pooled embeddings of every usable store scan of one cohort for a baseline encoder."""
    from braing3n.data.loader import VolumeDataset, eval_batches
    from braing3n.data.store import read_index
    from braing3n.evaluate.encoders import build_encoder, embed_batches

    ev = config["evaluate"]
    index = read_index(layout(config).store_index(cohort))
    aekl_dir = layout(config).model_dir(f"aekl_{aekl_bottleneck(ev)}") if encoder == "aekl" else None
    enc = build_encoder(encoder, ev["encoders"].get(encoder, {}), seed=config["seed"],
                        mae_config=mae_config_of(config) if encoder == "random_vit" else None, aekl_dir=aekl_dir)
    feats = embed_batches(enc, eval_batches(VolumeDataset(index), ev["batch_size"]), device_of(config))
    _atomic_npz(Path(out), scan_id=np.asarray(index["scan_id"], dtype=str), **feats)


# --- probes and comparison ------------------------------------------------------------------------

def run_probes(config: dict, encoder: str, embeddings: list[str], out_table: str, out_predictions: str) -> None:
    ev = config["evaluate"]
    manifest = read_manifest(config)
    panel = tasks.load_panel(ev["probes_panel"])
    emb = tasks.load_embeddings(embeddings)
    table, pred = tasks.run_panel(manifest, emb, panel, encoder, config["seed"], ev["n_splits"], ev["n_boot"])
    n_ok = int((table["status"] == "ok").sum()) if len(table) else 0
    prov = provenance(config, seed=config["seed"], scans=len(manifest), tasks=len(panel), probes_ok=n_ok)
    write_parquet(pred, out_predictions, prov)  # first: the table is the rule's declared output
    write_table(table, out_table, prov)


def run_compare(config: dict, reference: str, predictions: list[str], probe_tables: list[str], out_table: str,
                out_summary: str, out_figure: str) -> str:
    ev = config["evaluate"]
    pred = pd.concat([pd.read_parquet(p) for p in predictions], ignore_index=True)
    cmp = compare.compare_encoders(pred, reference, ev["n_boot"], config["seed"])
    prov = provenance(config, seed=config["seed"], encoders=pred["encoder"].nunique(), comparisons=len(cmp))
    write_table(cmp, out_table, prov)
    lines = [compare.summary_line(cmp, reference, feature) for feature in ("mean", "cls", "grid")
             if len(cmp) and (cmp["feature"] == feature).any()]
    lines = lines or [f"{reference}: nothing to compare (one encoder or no probe reached its minimum size)"]
    write_table(pd.DataFrame({"summary": lines}), out_summary, prov)
    probes = pd.concat([read_table(p)[0] for p in probe_tables], ignore_index=True)
    plot_probe_bars(probes, out_figure)
    return lines[0]


def plot_probe_bars(probes: pd.DataFrame, path: str, feature: str = "mean") -> None:
    """Primary metric (AUROC / Pearson r) per task and encoder with 95% CIs; pooled view preferred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = probes[(probes["status"] == "ok") & (probes["feature"] == feature)].copy()
    if len(ok):
        ok["rank"] = ok["view"].map({"pooled": 0, "all": 1, "T1": 2}).fillna(3)
        ok = ok.sort_values(["task", "encoder", "rank"]).groupby(["task", "encoder"], as_index=False).first()
    encs = sorted(ok["encoder"].unique()) if len(ok) else []
    task_names = sorted(ok["task"].unique()) if len(ok) else []
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(task_names) + 2), 3.5), dpi=100)
    width = 0.8 / max(1, len(encs))
    for j, enc in enumerate(encs):
        sub = ok[ok["encoder"] == enc].set_index("task")
        xs, ys, err = [], [], []
        for i, t in enumerate(task_names):
            if t not in sub.index:
                continue
            metric = "auroc" if sub.loc[t, "kind"] == "classification" else "pearson_r"
            v, lo, hi = sub.loc[t, metric], sub.loc[t, f"{metric}_lo"], sub.loc[t, f"{metric}_hi"]
            xs.append(i + j * width)
            ys.append(v)
            err.append([max(0, v - lo) if np.isfinite(lo) else 0, max(0, hi - v) if np.isfinite(hi) else 0])
        ax.bar(xs, ys, width, yerr=np.array(err).T if err else None, label=enc, capsize=2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(task_names))], task_names, rotation=45, ha="right",
                  fontsize=7)
    ax.set_ylabel("AUROC (class.) / Pearson r (regr.)")
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


# --- generation: guidance sweep (writes the samples FID and memorisation reuse) ---------------------

def real_latents(config: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """Manifest rows aligned with the MAE latents of every cohort."""
    from braing3n.generate.data import embeddings_paths, load_latents

    scan_ids, lat = load_latents(embeddings_paths(config))
    manifest = read_manifest(config)
    pos = {s: i for i, s in enumerate(scan_ids)}
    rows = manifest[manifest["scan_id"].isin(pos)].sort_values("scan_id", kind="stable").reset_index(drop=True)
    return rows, lat[[pos[s] for s in rows["scan_id"]]]


def requested_values(spec: list | str, name: str, gen, real: pd.DataFrame, column: str) -> list:
    """Values to request for one condition: explicit list, or 'auto' (every known value / age quartiles)."""
    if spec != "auto":
        return list(spec)
    if name in gen.vocab.categorical:
        return list(gen.vocab.categorical[name])
    ages = pd.to_numeric(real[column], errors="coerce").dropna()
    return [round(float(q), 1) for q in np.quantile(ages, [0.125, 0.375, 0.625, 0.875])] if len(ages) else []


def run_guidance(config: dict, out_table: str, out_figure: str, out_samples: str, out_mosaic: str) -> None:
    from braing3n.generate.conditions import CATEGORICAL_COLUMNS, CONTINUOUS_COLUMNS
    from braing3n.generate.sampler import load_generator, sample_latents

    ev, g = config["evaluate"], config["evaluate"]["guidance"]  # cross-key rules: config.check_cross_keys
    lay = layout(config)
    gen = load_generator(model_dir_for(config, "dit"), device_of(config))
    real, lat = real_latents(config)
    columns = {**CATEGORICAL_COLUMNS, **CONTINUOUS_COLUMNS}
    fixed = dict(g.get("fixed") or {})
    unknown = sorted(set(fixed) - set(gen.conditions))
    if unknown:
        raise ValueError(f"evaluate.guidance.fixed: the generator does not take {unknown} (it takes {gen.conditions})")
    # probes read samples made with the fixed values, so they are fitted on real scans with those values
    _, keep = fixed_rows(config, real)
    if not keep.any():
        raise ValueError(f"evaluate.guidance.fixed={fixed}: no real scan has these values")
    real, lat = real[keep].reset_index(drop=True), lat[keep]
    rows, latents = [], []
    for ci, (name, spec) in enumerate(sorted(g["conditions"].items())):
        if name not in gen.conditions:
            continue  # the model was trained without this condition
        for vi, value in enumerate(requested_values(spec, name, gen, real, columns[name])):
            for scale in g["scales"]:
                seed = config["seed"] + 1000 * ci + 10 * vi  # same noise across scales: only guidance changes
                # the fixed conditions stay in the unconditional branch: the scale guides `name` only
                z = sample_latents(gen, {**fixed, name: value}, g["n_per_value"], cfg_scale=float(scale),
                                   steps=g["steps"], solver=g["solver"], seed=seed, keep=fixed)
                latents.append(z.numpy())
                rows += [{"condition": name, "value": str(value), "cfg_scale": float(scale)}] * len(z)
    if not rows:
        raise ValueError(f"{lay.model_dir('dit')}: the generator takes none of the conditions "
                         f"{sorted(g['conditions'])} (it takes {gen.conditions})")
    samples = pd.DataFrame(rows)
    gen_lat = np.concatenate(latents).astype(np.float32)
    _atomic_npz(Path(out_samples), latent=gen_lat, condition=samples["condition"].to_numpy(str),
                value=samples["value"].to_numpy(str), cfg_scale=samples["cfg_scale"].to_numpy(float))
    conds = {n: {"column": columns[n], "kind": "regression" if n in CONTINUOUS_COLUMNS else "classification"}
             for n in samples["condition"].unique()}
    feats = guidance.latent_features(lat, g["latent_pool"])
    table = guidance.guidance_table(samples, guidance.latent_features(gen_lat, g["latent_pool"]), real, feats,
                                    conds, config["seed"], n_splits=config["evaluate"]["n_splits"])
    write_table(table, out_table, provenance(config, seed=config["seed"], generated=len(samples), real=len(real)))
    guidance.plot_guidance(table, out_figure)
    _mosaic(config, samples, gen_lat, out_mosaic, ev)


def _mosaic(config: dict, samples: pd.DataFrame, gen_lat: np.ndarray, path: str, ev: dict) -> None:
    """One decoded sample per requested value at the FID scale: a mosaic per condition, stacked."""
    from braing3n.generate.volumes import decode_latents, save_mosaic
    from braing3n.tokenizer import load_tokenizer

    tok = load_tokenizer(model_dir_for(config, "decoder"), device_of(config))
    sel = samples[samples["cfg_scale"] == float(ev["fid"]["cfg_scale"])].drop_duplicates(["condition", "value"])
    vols = decode_latents(tok, torch.from_numpy(gen_lat[sel.index.to_numpy()]))
    save_mosaic(list(vols), path, titles=[f"{c}={v}" for c, v in zip(sel["condition"], sel["value"], strict=True)])


def load_samples(path: str) -> tuple[pd.DataFrame, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return (pd.DataFrame({"condition": z["condition"], "value": z["value"], "cfg_scale": z["cfg_scale"]}),
                z["latent"].astype(np.float32))


# --- decomposed FID -----------------------------------------------------------------------------------

def _arm_mask(real: pd.DataFrame, column: str, value: str, age_halfwidth: float) -> np.ndarray:
    if column == "age":
        age = pd.to_numeric(real["age"], errors="coerce")
        return ((age - float(value)).abs() <= age_halfwidth).to_numpy()
    return (real[column].astype(str) == str(value)).to_numpy()


def fixed_rows(config: dict, real: pd.DataFrame) -> tuple[dict, np.ndarray]:
    """(``evaluate.guidance.fixed``, mask of the real rows that share those values). The guidance
    samples were generated with them held (the demo: modality T1), so FID and memorisation compare
    them with real scans of the same kind; otherwise every distance also measures e.g. T1 vs T2.
    A fixed age matches within ``evaluate.fid.age_halfwidth``."""
    from braing3n.generate.conditions import CATEGORICAL_COLUMNS, CONTINUOUS_COLUMNS

    columns = {**CATEGORICAL_COLUMNS, **CONTINUOUS_COLUMNS}
    fixed = dict(config["evaluate"]["guidance"].get("fixed") or {})
    keep = np.ones(len(real), bool)
    for name, value in fixed.items():
        keep &= _arm_mask(real, columns[name], value, config["evaluate"]["fid"]["age_halfwidth"])
    return fixed, keep


def run_fid(config: dict, samples_path: str, out_table: str) -> None:
    """Per arm (condition=value): generated vs real, generated vs reconstruction, reconstruction vs real."""
    from braing3n.data.loader import VolumeDataset, zscore
    from braing3n.data.store import read_index
    from braing3n.evaluate.encoders import build_encoder
    from braing3n.evaluate.fid import decomposed_fid
    from braing3n.generate.conditions import CATEGORICAL_COLUMNS, CONTINUOUS_COLUMNS
    from braing3n.tokenizer import load_tokenizer

    ev, f = config["evaluate"], config["evaluate"]["fid"]
    dev = device_of(config)
    tok = load_tokenizer(model_dir_for(config, "decoder"), dev)
    med = ev["encoders"].get("medicalnet", {})
    if f["extractor"] == "medicalnet" or (f["extractor"] == "auto" and med.get("weights")):
        net = build_encoder("medicalnet", med, seed=config["seed"]).to(dev)
        extractor = f"medicalnet-resnet{med.get('depth', 50)}-gap"

        def features(vols: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return net(vols.to(dev))["mean"].float().cpu().numpy()
    else:
        extractor = "braing3n-mae-encoder-mean"

        def features(vols: torch.Tensor) -> np.ndarray:
            return tok.encode(vols)["mean"].cpu().numpy()

    samples, gen_lat = load_samples(samples_path)
    keep = (samples["cfg_scale"] == float(f["cfg_scale"])).to_numpy()
    if not keep.any():
        raise ValueError(f"{samples_path}: no samples at evaluate.fid.cfg_scale={f['cfg_scale']} "
                         f"(scales present: {sorted(set(samples['cfg_scale']))})")
    samples, gen_lat = samples[keep].reset_index(drop=True), gen_lat[keep]
    real, real_lat = real_latents(config)
    index = read_index([layout(config).store_index(c) for c in cohorts(config)])
    real = real.assign(lat_row=np.arange(len(real)))
    real = real[real["scan_id"].isin(set(index["scan_id"]))].reset_index(drop=True)
    store = VolumeDataset(index.set_index("scan_id").loc[real["scan_id"]].reset_index())
    columns = {**CATEGORICAL_COLUMNS, **CONTINUOUS_COLUMNS}
    # an arm's real scans must share the values the samples were generated with (guidance.fixed)
    fixed, held = fixed_rows(config, real)
    rng = np.random.default_rng(config["seed"])
    feats: dict[str, dict[str, np.ndarray]] = {}
    for (name, value), grp in samples.groupby(["condition", "value"], sort=True):
        arm = f"{name}={value}"
        idx = np.flatnonzero(_arm_mask(real, columns[name], value, f["age_halfwidth"]) & held)
        if len(idx) > f["max_real"]:
            idx = np.sort(rng.choice(idx, f["max_real"], replace=False))
        real_f, recon_f = [], []
        for i in idx:
            vol = zscore(store[int(i)][None])
            real_f.append(features(vol))
            lat_i = torch.from_numpy(real_lat[real.loc[i, "lat_row"]][None])
            recon_f.append(features(tok.decode(lat_i)))
        gen_f = [features(tok.decode(torch.from_numpy(gen_lat[j][None]))) for j in grp.index]
        feats[arm] = {k: np.concatenate(v) for k, v in
                      (("real", real_f), ("reconstruction", recon_f), ("generated", gen_f)) if v}
        feats[arm]["subject"] = real.loc[idx, "subject_id"].astype(str).to_numpy()  # bootstrap unit
    table = decomposed_fid(feats, extractor, f["n_boot"], config["seed"])
    table.insert(1, "cfg_scale", float(f["cfg_scale"]))
    table.insert(2, "fixed", ", ".join(f"{k}={v}" for k, v in sorted(fixed.items())))
    write_table(table, out_table, provenance(config, seed=config["seed"], arms=len(feats),
                                             generated=len(samples)))


# --- memorisation -------------------------------------------------------------------------------------

def run_memorisation(config: dict, samples_path: str, out_table: str, out_samples_table: str) -> None:
    from braing3n.evaluate.memorisation import memorisation

    m = config["evaluate"]["memorisation"]
    pool = config["evaluate"]["guidance"]["latent_pool"]
    samples, gen_lat = load_samples(samples_path)
    real, lat = real_latents(config)
    feats = guidance.latent_features(lat, pool)
    split = real["split"].astype(str).to_numpy()
    fixed, same_kind = fixed_rows(config, real)  # training and held-out scans like the samples
    train, held = (split == "train") & same_kind, np.isin(split, ["val", "test"]) & same_kind
    per_sample, summary = memorisation(guidance.latent_features(gen_lat, pool), feats[train], feats[held],
                                       real.loc[train, "scan_id"].tolist(), m["quantile"], m["factor"])
    per_sample = pd.concat([samples, per_sample.drop(columns="sample")], axis=1)
    prov = provenance(config, seed=config["seed"], generated=len(samples), train=int(train.sum()),
                      heldout=int(held.sum()))
    fixed_txt = ", ".join(f"{k}={v}" for k, v in sorted(fixed.items()))
    write_table(pd.DataFrame([{"features": f"latent grid pooled x{pool}", "fixed": fixed_txt, **summary}]),
                out_table, prov)
    write_table(per_sample, out_samples_table, prov, markdown=False)


# --- longitudinal ---------------------------------------------------------------------------------------

HELD_OUT, IN_SAMPLE = "held-out", "in-sample (dit_long trained on them)"


def run_longitudinal(config: dict, out_table: str, out_pairs_table: str) -> None:
    from braing3n.data.geometry import crop_to_model
    from braing3n.evaluate import longitudinal as lg
    from braing3n.generate.data import join_pairs
    from braing3n.generate.sampler import load_generator, sample_latents
    from braing3n.phantom.tissues import load_tissues, load_ventricles
    from braing3n.tokenizer import load_tokenizer

    ev, lo = config["evaluate"], config["evaluate"]["longitudinal"]
    lay, dev = layout(config), device_of(config)
    gen = load_generator(model_dir_for(config, "dit_long"), dev)
    tok = load_tokenizer(model_dir_for(config, "decoder"), dev)
    real, lat = real_latents(config)
    pairs_set = join_pairs(pd.read_parquet(lay.pairs), real, real["scan_id"].to_numpy(), lat, splits=None,
                           source=lay.pairs)
    # dit_long learnt from the pairs whose baseline is in its train_splits: those are scored apart,
    # as in-sample, and held-out pairs first (max_pairs keeps them before any training pair)
    fitted = set(config["train"].get("dit_long", {}).get("train_splits", ["train"]))
    group = np.where(pairs_set.rows["split"].astype(str).isin(fitted), IN_SAMPLE, HELD_OUT)
    order = np.argsort(group != HELD_OUT, kind="stable")[:lo["max_pairs"]]
    pairs, group = pairs_set.rows.iloc[order].reset_index(drop=True), group[order]
    base_all, foll_all = pairs_set.baseline[order], pairs_set.followup[order]
    n = len(pairs)
    names = {"disease": "diagnosis", "sex": "sex", "modality": "modality", "age": "age", "years": "years"}
    forecasts = []
    for i in range(n):
        row = pairs.iloc[i]
        conds = {k: row[c] for k, c in names.items() if k in gen.conditions and c in row and pd.notna(row[c])}
        # a value the model never saw in training is passed as unknown rather than failing the pair
        conds = {k: v for k, v in conds.items()
                 if k not in gen.vocab.categorical or str(v).strip() in gen.vocab.categorical[k]}
        ctx = torch.from_numpy(base_all[i][None])
        forecasts.append(sample_latents(gen, conds, 1, cfg_scale=lo["cfg_scale"], steps=lo["steps"],
                                        solver=ev["guidance"]["solver"], seed=config["seed"] + i,
                                        context=ctx).numpy()[0])
    fc, base, foll = np.stack(forecasts), base_all, foll_all
    table = pd.concat([pairs[["subject_id", "scan_id", "followup_scan_id", "split", "years"]],
                       lg.latent_errors(fc, foll, base)], axis=1)
    table.insert(4, "pairs", group)
    # age probe trained on real latents of subjects outside the evaluated pairs; with too few of
    # them (a tiny cohort where everyone is longitudinal) the probe is in-sample, and the table says so
    pool = ev["guidance"]["latent_pool"]
    feats = guidance.latent_features(lat, pool)
    train = (~real["subject_id"].isin(set(pairs["subject_id"])) & real["age"].notna()).to_numpy()
    probe_on = "subjects outside the pairs"
    if real.loc[train, "subject_id"].nunique() < 6:
        train = real["age"].notna().to_numpy()
        probe_on = "all subjects, the pairs' own included (fewer than 6 others have an age)"
    q = guidance.latent_features(np.concatenate([base, fc]), pool)
    pred, _ = guidance.fit_condition_probe(feats[train], real.loc[train, "age"].to_numpy(float),
                                           real.loc[train, "subject_id"].to_numpy(), "regression", q, config["seed"])
    table["pred_age_baseline"], table["pred_age_forecast"] = pred[:n], pred[n:]
    labels, vent = crop_to_model(load_tissues()), crop_to_model(load_ventricles())
    decode = lambda z: tok.decode(torch.from_numpy(z)).cpu().numpy()[:, 0]  # noqa: E731
    vox, change = [], {HELD_OUT: np.zeros(labels.shape), IN_SAMPLE: np.zeros(labels.shape)}
    for i in range(n):
        vb, vf, vy = decode(base[i:i + 1]), decode(fc[i:i + 1]), decode(foll[i:i + 1])
        vox.append(lg.voxel_errors(vf, vy, vb, np.isin(labels, lg.BRAIN_LABELS)))
        change[group[i]] += np.abs(vf[0] - vb[0])
    table = pd.concat([table, pd.concat(vox, ignore_index=True)], axis=1)
    rows = []
    for name in (HELD_OUT, IN_SAMPLE):
        sel = table["pairs"] == name
        age = lg.age_progression(table.loc[sel, "years"].to_numpy(), table.loc[sel, "pred_age_baseline"].to_numpy(),
                                 table.loc[sel, "pred_age_forecast"].to_numpy())
        summary = {"pairs": name, **age, "n_pairs": int(sel.sum()), "age_probe_trained_on": probe_on}
        summary.update(lg.change_localisation(change[name], np.zeros(labels.shape), labels, vent))
        for col in ("latent_mae", "latent_mae_no_change", "voxel_l1", "voxel_l1_no_change"):
            summary[f"mean_{col}"] = float(table.loc[sel, col].mean()) if sel.any() else np.nan
        rows.append(summary)
    prov = provenance(config, seed=config["seed"], pairs=n, held_out_pairs=int((group == HELD_OUT).sum()))
    write_table(pd.DataFrame(rows), out_table, prov)
    write_table(table, out_pairs_table, prov, markdown=False)
