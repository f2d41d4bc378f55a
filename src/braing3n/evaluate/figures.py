"""`braing3n evaluate figures`: the report's pictures that need the models at hand.

- ``samples_vs_real.png``: per conditioning arm (``disease=AD``, ``sex=F``, ``age=61.3``...), a
  real scan of that arm, its tokenizer reconstruction and generated samples of the arm (at
  ``evaluate.fid.cfg_scale``), axial / coronal / sagittal through the same point, all on ONE
  intensity window: the 1st-99th percentile of the real scan's brain voxels (z-scored, as the
  models see them), so a sample brighter or flatter than real anatomy shows as such. An arm with
  no real scan (an age no subject has) uses the window of the first real scan of the samples'
  kind (``evaluate.guidance.fixed``) and says so in its title.
- ``reconstructions.png``: real | reconstruction | absolute error for a few held-out scans.

Voxels outside the SRI24 brain mask (dilated 3 voxels), and a real scan's own background, are drawn
at the window's floor (black) in every panel: the z-scored background is 0, the brain's mean, and
would otherwise read as mid-grey.
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
PANEL_IN = 1.5  # inches per slice panel; at DPI a 160-192 voxel slice gets ~120 pixels
DPI = 80


def display_mask() -> np.ndarray:
    """Model-grid (160, 192, 160) SRI24 brain mask, dilated 3 voxels."""
    from scipy.ndimage import binary_dilation

    from braing3n.data.geometry import crop_to_model
    from braing3n.evaluate.longitudinal import BRAIN_LABELS
    from braing3n.phantom.tissues import load_tissues

    return binary_dilation(np.isin(crop_to_model(load_tissues()), BRAIN_LABELS), iterations=3)


def brain_window(real: np.ndarray, mask: np.ndarray, name: str = "real scan") -> tuple[float, float]:
    """Robust intensity window of a real scan: the 1st and 99th percentiles of its brain voxels
    (nonzero and inside ``mask``; all nonzero voxels when the mask misses the scan)."""
    vox = real[mask & (real != 0)]
    if not vox.size:
        vox = real[real != 0]
    if not vox.size:
        raise ValueError(f"{name}: no nonzero voxel, no intensity window to draw it on")
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
    fig.savefig(tmp, dpi=DPI, format="png", facecolor="black", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shown(vol: np.ndarray, mask: np.ndarray, floor: float, real: bool) -> np.ndarray:
    keep = mask & (vol != 0) if real else mask
    return np.where(keep, vol, floor)


def samples_figure_size(n_arms: int, n_columns: int) -> tuple[float, float]:
    """(width, height) in inches: two arms side by side, each 3 planes x ``n_columns`` panels plus a
    title row."""
    per_row = 2 if n_arms > 1 else 1
    return per_row * n_columns * PANEL_IN + 0.3 * (per_row - 1), -(-n_arms // per_row) * (3.35 * PANEL_IN)


def plot_samples_vs_real(arms: list[dict], mask: np.ndarray, path: str | Path) -> list[dict]:
    """``arms``: {"title", "volumes": [(label, vol, is_real)], "window": (lo, hi)}; one block per arm
    (rows = planes, columns = real, reconstruction, generated...), two blocks side by side. Every
    panel of a block is drawn on the block's window. Returns one dict per panel (arm, label, plane,
    window) as drawn."""
    plt = _plt()
    point = centre_of(mask)
    ncol = max(len(a["volumes"]) for a in arms)
    per_row = 2 if len(arms) > 1 else 1
    fig = plt.figure(figsize=samples_figure_size(len(arms), ncol), facecolor="black")
    outer = fig.add_gridspec(-(-len(arms) // per_row), per_row, wspace=0.06, hspace=0.08,
                             left=0.005, right=0.995, top=0.995, bottom=0.005)
    drawn = []
    for b, arm in enumerate(arms):
        inner = outer[b // per_row, b % per_row].subgridspec(4, ncol, wspace=0.02, hspace=0.02,
                                                             height_ratios=(0.35, 1, 1, 1))
        head = fig.add_subplot(inner[0, :])
        head.set_axis_off()
        head.text(0, 0.5, arm["title"], fontsize=9, color="#ffd54f", ha="left", va="center")
        lo, hi = arm["window"]
        for c, (label, vol, is_real) in enumerate(arm["volumes"]):
            for r, sl in enumerate(slices_through(_shown(vol, mask, lo, is_real), point)):
                ax = fig.add_subplot(inner[r + 1, c])
                im = ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(label, fontsize=7, color="white", pad=2)
                drawn.append({"arm": arm["title"], "label": label, "plane": PLANES[r], "window": im.get_clim()})
    _save(fig, path)
    return drawn


def plot_reconstructions(scans: list[dict], mask: np.ndarray, path: str | Path) -> list[dict]:
    """``scans``: {"title", "real", "recon"}; one row per scan: real | reconstruction | |error|, each
    through the same three planes. Real and reconstruction share the real scan's window; the error
    map's window is 0 to the 99th percentile of the brain errors of all scans shown. Returns one dict
    per panel (scan, group, plane, window) as drawn."""
    plt = _plt()
    point = centre_of(mask)
    brains = [mask & (s["real"] != 0) for s in scans]
    errors = [np.abs(s["recon"] - s["real"]) * m for s, m in zip(scans, brains, strict=True)]
    err_hi = float(np.percentile(np.concatenate([e[m] for e, m in zip(errors, brains, strict=True)]), 99)) or 1.0
    fig, axes = plt.subplots(len(scans), 9, figsize=(9 * PANEL_IN, (PANEL_IN + 0.3) * len(scans)), squeeze=False,
                             facecolor="black", gridspec_kw={"wspace": 0.02, "hspace": 0.25, "left": 0.005,
                                                             "right": 0.995, "top": 0.94, "bottom": 0.005})
    drawn = []
    for r, (scan, err) in enumerate(zip(scans, errors, strict=True)):
        lo, hi = brain_window(scan["real"], mask, scan["title"])
        groups = (("real", _shown(scan["real"], mask, lo, True), "gray", lo, hi),
                  ("reconstruction", _shown(scan["recon"], mask, lo, False), "gray", lo, hi),
                  ("|error|", err, "magma", 0.0, err_hi))
        for g, (name, vol, cmap, vmin, vmax) in enumerate(groups):
            for p, sl in enumerate(slices_through(vol, point)):
                ax = axes[r, 3 * g + p]
                im = ax.imshow(sl, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                ax.set_axis_off()
                if p == 1:
                    ax.set_title(name, fontsize=8, color="white", pad=2)
                drawn.append({"scan": scan["title"], "group": name, "plane": PLANES[p], "window": im.get_clim()})
        axes[r, 0].set_title(scan["title"], fontsize=7, color="#ffd54f", loc="left", pad=2)
    _save(fig, path)
    return drawn


def pick_scans(rows: pd.DataFrame) -> pd.DataFrame:
    """Held-out scans first, then by scan_id: a deterministic choice that avoids training scans."""
    split = rows["split"].astype(str) if "split" in rows else pd.Series("", index=rows.index)
    trained = ~split.isin(HELD_OUT_SPLITS).to_numpy()
    return rows.assign(_trained=trained).sort_values(["_trained", "scan_id"], kind="stable").drop(columns="_trained")


def run_figures(config: dict, samples_path: str, out_samples: str, out_recon: str, n_generated: int = 3,
                n_recon: int = 3) -> dict[str, list]:
    """Write both figures; returns what they show: per arm its title, panel labels and window, and
    the reconstruction panels (``plot_reconstructions``)."""
    from braing3n.data.loader import VolumeDataset, zscore
    from braing3n.data.store import read_index
    from braing3n.generate.conditions import CATEGORICAL_COLUMNS, CONTINUOUS_COLUMNS
    from braing3n.tokenizer import load_tokenizer

    f = config["evaluate"]["fid"]
    samples, gen_lat = stages.load_samples(samples_path)
    at_scale = samples[samples["cfg_scale"] == float(f["cfg_scale"])]
    if not len(at_scale):
        raise ValueError(f"{samples_path}: no samples at evaluate.fid.cfg_scale={f['cfg_scale']} "
                         f"(scales present: {sorted(set(samples['cfg_scale']))})")
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

    columns = {**CATEGORICAL_COLUMNS, **CONTINUOUS_COLUMNS}
    _, same_kind = stages.fixed_rows(config, real)
    kind_rows = pick_scans(real[same_kind] if same_kind.any() else real)
    fallback_id = str(kind_rows["scan_id"].iloc[0])
    fallback = brain_window(real_z(fallback_id), mask, fallback_id)
    scale = f"cfg {float(f['cfg_scale']):g}"
    arms = []
    for (name, value), grp in at_scale.groupby(["condition", "value"], sort=True):
        match = stages._arm_mask(real, columns[name], value, f["age_halfwidth"]) & same_kind
        vols = []
        if match.any():
            row = pick_scans(real[match]).iloc[0]
            vol = real_z(row["scan_id"])
            vols += [(f"real {row['scan_id']}"[:28], vol, True), ("reconstruction", decode(lat[row["lat_row"]]), False)]
            title, window = f"{name}={value} ({scale})", brain_window(vol, mask, str(row["scan_id"]))
        else:
            title, window = f"{name}={value} ({scale}): no real scan of this arm; window of {fallback_id}", fallback
        vols += [(f"generated {k + 1}", decode(gen_lat[j]), False) for k, j in enumerate(grp.index[:n_generated])]
        arms.append({"title": title, "volumes": vols, "window": window})
        log.info("figures: arm %s, %d panels, window %.2f..%.2f", title, len(vols), *window)
    plot_samples_vs_real(arms, mask, out_samples)
    picked = pick_scans(real)
    first = picked.drop_duplicates("modality") if "modality" in picked else picked.head(1)
    scans = []
    for _, row in pd.concat([first, picked.drop(first.index)]).head(n_recon).iterrows():  # modalities first
        vol, rec = real_z(row["scan_id"]), decode(lat[row["lat_row"]])
        brain = mask & (vol != 0)
        l1 = float(np.abs(rec - vol)[brain].mean()) if brain.any() else float("nan")
        scans.append({"title": f"{row['scan_id']} ({row.get('split', '?')}): brain L1 {l1:.2f} z", "real": vol,
                      "recon": rec})
    recon_panels = plot_reconstructions(scans, mask, out_recon)
    log.info("figures: %s (%d arms), %s (%d scans)", out_samples, len(arms), out_recon, len(scans))
    return {"arms": [(a["title"], [label for label, _, _ in a["volumes"]], a["window"]) for a in arms],
            "reconstructions": recon_panels}
