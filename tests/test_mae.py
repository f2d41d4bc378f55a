"""3D MAE: token geometry, exact masking, masked-only loss, and loss falling on phantom volumes."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from braing3n.atlas import AFFINE
from braing3n.data.store import build_store
from braing3n.models.mae import MAE, mae_config, mae_flops, patchify, sincos_pos_embed_3d, unpatchify
from braing3n.tokenizer.tasks import make_mae_task
from braing3n.train.engine import TrainConfig, fit

torch.set_num_threads(1)


def _phantom(rng: np.random.Generator) -> np.ndarray:
    """Atlas-grid head phantom: nested ellipsoids (CSF/GM/WM-like), a ventricle, a lesion, contrast and noise."""
    i, j, k = np.meshgrid(np.arange(240), np.arange(240), np.arange(155), indexing="ij", sparse=True)
    r = np.sqrt(((i - 120) / 62) ** 2 + ((j - 120) / 80) ** 2 + ((k - 75) / 60) ** 2)
    vol = np.where(r < 1, 300.0, 0) + np.where(r < 0.85, 500.0, 0) - np.where(r < 0.25, 600.0, 0)
    c = rng.integers([90, 90, 50], [150, 150, 100])
    vol[c[0] - 6:c[0] + 6, c[1] - 6:c[1] + 6, c[2] - 6:c[2] + 6] *= 1.6
    vol = vol * rng.uniform(0.5, 2.0) * (1 + 0.02 * rng.standard_normal(vol.shape))
    return np.clip(vol, 0, None).astype(np.int16)


def make_phantom_cohort(root, n: int = 4, seed: int = 0) -> dict:
    """``n`` phantom scans as a preprocessed cohort: atlas-space NIfTI, QC table, store and a manifest
    (last scan in split 'test'). Returns a pipeline config pointing at it."""
    rng = np.random.default_rng(seed)
    pre = root / "pre"
    pre.mkdir(parents=True)
    ids, paths = [], []
    for i in range(n):
        sid = f"phantom_sub-{i:02d}_ses-bl_T1"
        path = pre / f"{sid}.nii"
        nib.save(nib.Nifti1Image(_phantom(rng), AFFINE), path)
        ids.append(sid)
        paths.append(str(path))
    results = root / "results"
    (results / "qc").mkdir(parents=True)
    (results / "metadata").mkdir(parents=True)
    qc = pd.DataFrame({"scan_id": ids, "status": "ok", "atlas_path": paths})
    qc.to_parquet(results / "qc" / "phantom_qc.parquet")
    pd.DataFrame({"scan_id": ids, "subject_id": [f"phantom:{i}" for i in range(n)],
                  "split": ["train"] * (n - 1) + ["test"]}).to_parquet(results / "metadata" / "manifest.parquet")
    build_store(results / "qc" / "phantom_qc.parquet", results / "store" / "phantom" / "index.parquet", "phantom")
    return {"results": str(results), "seed": 0, "device": "cpu",
            "cohorts": {"phantom": {"mapping": "x", "root": str(root)}}}


def tcfg(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=2, lr=3e-3, warmup_steps=2, ema_decay=0.0, ckpt_every=20, log_every=10, seed=0,
                num_workers=0, grad_clip=1.0, device="cpu", bf16=False,
                extra={"preset": "tiny", "mask_ratio": 0.7, "norm_pix_loss": False, "splits": ["train"]})
    base.update(kw)
    return TrainConfig(**base)


def test_token_count_and_exact_masking():
    cfg = mae_config("tiny")
    assert cfg.grid == (10, 12, 10) and cfg.n_tokens == 1200 and cfg.n_keep == 360
    model = MAE(cfg)
    torch.manual_seed(0)
    ids_keep, ids_restore, mask = model.random_masking(3, torch.device("cpu"))
    assert ids_keep.shape == (3, 360)
    assert mask.sum(1).tolist() == [840.0, 840.0, 840.0]  # exactly 70 % per sample
    assert not torch.equal(mask[0], mask[1])  # independent per sample
    for b in range(3):
        assert mask[b, ids_keep[b]].sum() == 0  # kept tokens are the unmasked ones
    assert mae_config("paper").width == 1152 and mae_config("vitb").heads == 12


def test_patchify_roundtrip_and_pos_embed():
    x = torch.randn(2, 1, 160, 192, 160)
    p = patchify(x)
    assert p.shape == (2, 1200, 4096)
    assert torch.equal(p[0, 1], x[0, 0, :16, :16, 16:32].reshape(-1))  # token 1 = next patch along w
    assert torch.equal(unpatchify(p, (10, 12, 10)), x)
    pe = sincos_pos_embed_3d((10, 12, 10), 96)
    assert pe.shape == (1200, 96) and torch.unique(pe, dim=0).shape[0] == 1200


def test_loss_counts_only_masked_patches():
    model = MAE(mae_config("tiny"))
    target = torch.randn(2, 1200, 4096)
    mask = torch.zeros(2, 1200)
    mask[:, :840] = 1
    pred = target.clone()
    pred[:, 840:] += 5.0  # wrong only on visible patches: no loss
    assert float(model.masked_loss(pred, target, mask)) == 0.0
    pred[:, :840] += 1.0
    assert abs(float(model.masked_loss(pred, target, mask)) - 1.0) < 1e-5
    assert mae_flops(mae_config("vitb")) > 1e11


def test_mae_loss_falls_on_phantom_volumes(tmp_path):
    """40 steps of the tiny MAE through the engine at the real 160x192x160 shape (about 20 s on one core;
    hundreds of steps would break the test budget; the demo runs 120). Masked-patch MSE falls by > 10 %."""
    config = make_phantom_cohort(tmp_path)
    cfg = tcfg()
    task = make_mae_task(config, cfg)
    assert len(task.dataset) == 3  # the test scan is held out
    fit(task, cfg, tmp_path / "mae")
    rows = list(csv.DictReader(open(tmp_path / "mae" / "metrics.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 4  # mean loss of steps 1-10, ..., 31-40
    assert losses[-1] < 0.9 * losses[0], losses


def test_pool_token_grid_averages_2x2x2_token_blocks_in_grid_order():
    from braing3n.models.mae import pool_token_grid

    grid = (10, 12, 10)
    tokens = torch.randn(2, 1200, 3)
    out = pool_token_grid(tokens, grid)
    assert out.shape == (2, 5 * 6 * 5 * 3)
    g = tokens.reshape(2, 10, 12, 10, 3)
    block = g[:, 2:4, 4:6, 6:8].mean(dim=(1, 2, 3))  # pooled cell (1, 2, 3)
    cell = out.reshape(2, 3, 5, 6, 5)[:, :, 1, 2, 3]  # channel-major: [B, D, 5, 6, 5]
    assert torch.allclose(cell, block, atol=1e-6)
