"""`braing3n evaluate figures`: the report's pictures that need the models at hand.

- ``samples_vs_real.png``: per conditioning arm (``disease=AD``, ``sex=F``, ``age=61.3``...), a
  real scan of that arm, its tokenizer reconstruction and generated samples of the arm (at
  ``evaluate.fid.cfg_scale``), axial / coronal / sagittal through the same point, all on ONE
  intensity window: the 1st-99th percentile of the real scan's brain voxels (z-scored, as the
  models see them), so a sample brighter or flatter than real anatomy shows as such.
- ``reconstructions.png``: real | reconstruction | absolute error for a few held-out scans.

Voxels outside the SRI24 brain mask (dilated 3 voxels) are drawn black in every panel: the
z-scored background is 0, the brain's mean, and would otherwise read as mid-grey.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from braing3n.evaluate import stages
from braing3n.paths import model_dir_for

log = logging.getLogger(__name__)
WINDOW_PERCENTILES = (1.0, 99.0)
PLANES = ("axial", "coronal", "sagittal")
HELD_OUT_SPLITS = ("test", "val")


def display_mask() -> np.ndarray:
    """Model-grid (160, 192, 160) SRI24 brain mask, dilated 3 voxels."""
    from scipy.ndimage import binary_dilation

    from braing3n.data.geometry import crop_to_model
    from braing3n.evaluate.longitudinal import BRAIN_LABELS
    from braing3n.phantom.tissues import load_tissues

    return binary_dilation(np.isin(crop_to_model(load_tissues()), BRAIN_LABELS), iterations=3)


def brain_window(real: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Robust intensity window of a real scan: percentiles of its brain voxels (nonzero, in mask)."""
    vox = real[mask & (real != 0)]
    if not vox.size:
        return -1.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vox, WINDOW_PERCENTILES))
    return lo, hi if hi > lo else lo + 1.0


def slices_through(vol: np.ndarray, point: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of a model-grid (LPS) volume through ``point``, oriented as
    braing3n.generate.volumes.mid_slices (anterior / superior up, radiological left-right)."""
    i, j, k = point
    return [np.flipud(np.rot90(vol[:, :, k], 1)), np.rot90(vol[:, j, :], 1), np.fliplr(np.rot90(vol[i, :, :], 1))]


def centre_of(mask: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(c)) for c in np.argwhere(mask).mean(0))  # type: ignore[return-value]


def _save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp." + path.name)
    fig.savefig(tmp, dpi=80, format="png", facecolor="black", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples_vs_real(arms: list[dict], mask: np.ndarray, path: str | Path) -> None:
    """``arms``: {"title", "volumes": [(label, vol)], "window": (lo, hi)}; one block per arm (rows =
    planes, columns = real, reconstruction, generated...), two blocks side by side."""
    plt = _plt()
    point = centre_of(mask)
    ncol = max(len(a["volumes"]) for a in arms)
    per_row = 2 if len(arms) > 1 else 1
    nblock_rows = -(-len(arms) // per_row)
    fig = plt.figure(figsize=(per_row * ncol * 1.25 + 0.3 * (per_row - 1), nblock_rows * 4.1), facecolor="black")
    outer = fig.add_gridspec(nblock_rows, per_row, wspace=0.06, hspace=0.12)
    for b, arm in enumerate(arms):
        inner = outer[b // per_row, b % per_row].subgridspec(3, ncol, wspace=0.02, hspace=0.02)
        lo, hi = arm["window"]
        for c, (label, vol) in enumerate(arm["volumes"]):
            shown = np.where(mask, vol, lo)
            for r, sl in enumerate(slices_through(shown, point)):
                ax = fig.add_subplot(inner[r, c])
                ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(label, fontsize=7, color="white")
                if r == 0 and c == 0:
                    ax.text(0, -0.32, arm["title"], transform=ax.transAxes, fontsize=9, color="#ffd54f",
                            ha="left", va="bottom")
    _save(fig, path)


def plot_reconstructions(scans: list[dict], mask: np.ndarray, path: str | Path) -> None:
    """``scans``: {"title", "real", "recon"}; one row per scan: real | reconstruction | |error|, each
    through the same three planes. Real and reconstruction share the real scan's window; the error
    map's window is 0 to the 99th percentile of the errors of all scans shown."""
    plt = _plt()
    point = centre_of(mask)
    errors = [np.abs(s["recon"] - s["real"]) * mask for s in scans]
    err_hi = float(np.percentile(np.concatenate([e[mask] for e in errors]), 99)) or 1.0
    fig, axes = plt.subplots(len(scans), 9, figsize=(11.5, 1.45 * len(scans) + 0.35), squeeze=False,
                             facecolor="black", gridspec_kw={"wspace": 0.02, "hspace": 0.12})
    for r, (scan, err) in enumerate(zip(scans, errors, strict=True)):
        lo, hi = brain_window(scan["real"], mask)
        groups = (("real", np.where(mask, scan["real"], lo), "gray", lo, hi),
                  ("reconstruction", np.where(mask, scan["recon"], lo), "gray", lo, hi),
                  ("|error|", err, "magma", 0.0, err_hi))
        for g, (name, vol, cmap, vmin, vmax) in enumerate(groups):
            for p, sl in enumerate(slices_through(vol, point)):
                ax = axes[r, 3 * g + p]
                ax.imshow(sl, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                ax.set_axis_off()
                if r == 0 and p == 1:
                    ax.set_title(name, fontsize=8, color="white")
        axes[r, 0].text(0, 1.02, scan["title"], transform=axes[r, 0].transAxes, fontsize=7, color="#ffd54f",
                        ha="left", va="bottom")
    _save(fig, path)


def _pick(rows: pd.DataFrame) -> pd.DataFrame:
    """Held-out scans first, then by scan_id: a deterministic choice that avoids training scans."""
    held = ~rows["split"].astype(str).isin(HELD_OUT_SPLITS) if "split" in rows else pd.Series(False, rows.index)
    return rows.assign(_train=held.to_numpy()).sort_values(["_train", "scan_id"], kind="stable")


def run_figures(config: dict, samples_path: str, out_samples: str, out_recon: str, n_generated: int = 3,
                n_recon: int = 3) -> dict[str, list]:
    """Write both figures; returns what they show (arm titles with panel labels, scan titles)."""
    from braing3n.data.loader import VolumeDataset, zscore
    from braing3n.data.store import read_index
    from braing3n.generate.conditions import CATEGORICAL_COLUMNS, CONTINUOUS_COLUMNS
    from braing3n.tokenizer import load_tokenizer

    f = config["evaluate"]["fid"]
    tok = load_tokenizer(model_dir_for(config, "decoder"), stages.device_of(config))
    mask = display_mask()
    real, lat = stages.real_latents(config)
    index = read_index([stages.layout(config).store_index(c) for c in stages.cohorts(config)])
    real = real.assign(lat_row=np.arange(len(real)))
    real = real[real["scan_id"].isin(set(index["scan_id"]))].reset_index(drop=True)
    if not len(real):
        raise ValueError(f"{samples_path}: no real scan is both in the store and in the embeddings")
    by_id = index.drop_duplicates("scan_id").set_index("scan_id")

    def real_z(scan_id: str) -> np.ndarray:
        store = VolumeDataset(by_id.loc[[scan_id]].reset_index())
        return zscore(store[0][None])[0, 0].numpy()

    def decode(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return tok.decode(torch.from_numpy(np.ascontiguousarray(z[None], np.float32)))[0, 0].float().cpu().numpy()

    samples, gen_lat = stages.load_samples(samples_path)
    at_scale = samples[samples["cfg_scale"] == float(f["cfg_scale"])]
    if not len(at_scale):
        raise ValueError(f"{samples_path}: no samples at evaluate.fid.cfg_scale={f['cfg_scale']}")
    columns = {**CATEGORICAL_COLUMNS, **CONTINUOUS_COLUMNS}
    _, same_kind = stages.fixed_rows(config, real)
    arms = []
    for (name, value), grp in at_scale.groupby(["condition", "value"], sort=True):
        match = stages._arm_mask(real, columns[name], value, f["age_halfwidth"]) & same_kind
        vols = []
        title = f"{name}={value} (cfg {float(f['cfg_scale']):g})"
        if match.any():
            row = _pick(real[match]).iloc[0]
            vols += [(f"real {row['scan_id']}"[:28], real_z(row["scan_id"])),
                     ("reconstruction", decode(lat[row["lat_row"]]))]
        else:
            title += ": no real scan of this arm"
        vols += [(f"generated {k + 1}", decode(gen_lat[j])) for k, j in enumerate(grp.index[:n_generated])]
        window = brain_window(vols[0][1], mask) if match.any() else brain_window(vols[-1][1], mask)
        arms.append({"title": title, "volumes": vols, "window": window})
        log.info("figures: arm %s, %d panels", title, len(vols))
    plot_samples_vs_real(arms, mask, out_samples)
    scans = []
    picked = _pick(real)
    first = picked.drop_duplicates("modality")  # one scan per modality first, then more of them
    for _, row in pd.concat([first, picked.drop(first.index)]).head(n_recon).iterrows():
        vol, rec = real_z(row["scan_id"]), decode(lat[row["lat_row"]])
        l1 = float(np.abs(rec - vol)[mask].mean())
        scans.append({"title": f"{row['scan_id']} ({row.get('split', '?')}), brain L1 {l1:.2f} z", "real": vol,
                      "recon": rec})
    plot_reconstructions(scans, mask, out_recon)
    return {"arms": [(a["title"], [label for label, _ in a["volumes"]]) for a in arms],
            "reconstructions": [s["title"] for s in scans]}
