"""Per-scan QC numbers and the tri-planar overlay PNG."""

from __future__ import annotations

import numpy as np


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised cross-correlation of two images inside ``mask`` (same-contrast similarity)."""
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else 0.0


def nmi(a: np.ndarray, b: np.ndarray, mask: np.ndarray, bins: int = 64) -> float:
    """Studholme normalised mutual information (H(A)+H(B))/H(A,B) inside ``mask``: 1 = independent, 2 = identical."""
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    if x.size == 0 or x.std() == 0 or y.std() == 0:
        return 1.0
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(0)) + entropy(p.sum(1))) / entropy(p)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / s) if s else 1.0


def wm_cov(img: np.ndarray, wm: np.ndarray) -> float:
    """Coefficient of variation of intensity inside a white-matter mask (bias-field measure)."""
    v = img[wm.astype(bool)].astype(np.float64)
    return float(v.std() / v.mean()) if v.size and v.mean() != 0 else float("nan")


def overlay_png(volume: np.ndarray, mask: np.ndarray, path: str, title: str) -> None:
    """Tri-planar view through the mask's centre with the mask outline in red (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = [int(round(c)) for c in np.argwhere(mask).mean(0)] if mask.any() else [s // 2 for s in volume.shape]
    hi = float(np.percentile(volume[mask > 0], 99.5)) if mask.any() else float(volume.max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), facecolor="black")
    for ax, axis in zip(axes, (2, 1, 0), strict=True):
        sl = np.take(volume, centre[axis], axis=axis)
        ml = np.take(mask, centre[axis], axis=axis)
        # atlas LPS grid: transpose so anterior/superior point up
        ax.imshow(np.rot90(sl), cmap="gray", vmin=0, vmax=hi)
        if ml.any():
            ax.contour(np.rot90(ml.astype(float)), levels=[0.5], colors="red", linewidths=0.6)
        ax.axis("off")
    fig.suptitle(title, color="white", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80, facecolor="black", format="png")
    plt.close(fig)
