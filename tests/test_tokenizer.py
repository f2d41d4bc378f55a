"""Tokenizer: frozen encoder stays frozen, 1200x32 latents exported, reconstructions overlay the input."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_mae import make_phantom_cohort, tcfg

from braing3n.atlas import AFFINE
from braing3n.data.geometry import crop_to_model
from braing3n.data.store import read_index
from braing3n.provenance import read_table
from braing3n.tokenizer import load_tokenizer
from braing3n.tokenizer.export import export_embeddings
from braing3n.tokenizer.reconstruct import reconstruct
from braing3n.tokenizer.tasks import make_decoder_task, make_mae_task
from braing3n.train.engine import fit

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    config = make_phantom_cohort(root)
    fit(make_mae_task(config, tcfg(steps=2)), tcfg(steps=2), root / "results" / "models" / "mae")
    cfg = tcfg(steps=3, batch_size=1, lr=5e-3, ema_decay=0.9, ckpt_every=3, log_every=1,
               extra={"preset": "tiny", "latent_dim": 32, "mae_dir": "", "splits": ["train"]})
    task = make_decoder_task(config, cfg)
    initial = {k: v.clone() for k, v in task.build_model().state_dict().items()}
    fit(task, cfg, root / "results" / "models" / "decoder")
    return config, root, initial


def test_frozen_encoder_stays_frozen(trained):
    config, root, initial = trained
    mae = load_file(root / "results" / "models" / "mae" / "final.safetensors")  # that run had EMA off
    for name in ("final.safetensors", "final_ema.safetensors"):
        dec = load_file(root / "results" / "models" / "decoder" / name)
        enc = {k: v for k, v in dec.items() if k.startswith("encoder.")}
        assert len(enc) > 10
        for k, v in enc.items():
            assert torch.equal(v, mae[k]) and torch.equal(v, initial[k]), k  # bit-identical after training
        assert not torch.equal(dec["proj.weight"], initial["proj.weight"])  # the trainable part moved
        assert not torch.equal(dec["decoder.net.0.weight"], initial["decoder.net.0.weight"])
    tok = load_tokenizer(root / "results" / "models" / "decoder", "cpu")
    assert not tok.model.encoder.training and not any(p.requires_grad for p in tok.model.encoder.parameters())
    tok.model.train()
    assert not tok.model.encoder.training  # train() never unfreezes the encoder


def test_export_latent_shape(trained, tmp_path):
    config, root, _ = trained
    tok = load_tokenizer(root / "results" / "models" / "decoder", "cpu")
    index = read_index([root / "results" / "store" / "phantom" / "index.parquet"])
    arrays = export_embeddings(tok, index, tmp_path / "phantom.npz", batch_size=2)
    z = np.load(tmp_path / "phantom.npz")
    assert z["latent"].shape == (4, 1200, 32) and z["latent"].dtype == np.float32
    assert z["cls"].shape == z["mean"].shape == (4, 96)
    assert z["grid"].shape == (4, 5 * 6 * 5 * 96) and z["grid"].dtype == np.float16  # token grid pooled by 2
    assert list(z["scan_id"]) == list(index.scan_id) == list(arrays["scan_id"])
    assert np.isfinite(z["latent"]).all() and z["latent"][0].std() > 0
    assert not np.allclose(z["latent"][0], z["latent"][1])  # different scans -> different latents
    out = tok.decode(torch.from_numpy(z["latent"][:1]))
    assert out.shape == (1, 1, 160, 192, 160)


def test_reconstruction_nifti_overlays_input(trained, tmp_path):
    config, root, _ = trained
    tok = load_tokenizer(root / "results" / "models" / "decoder", "cpu")
    index = read_index([root / "results" / "store" / "phantom" / "index.parquet"]).head(1)
    table = reconstruct(tok, index, tmp_path, n_nifti=1)
    assert list(table.columns) == ["scan_id", "cohort", "l1", "psnr", "ssim", "l1_volume"]
    row = table.iloc[0]
    assert 0 < row.l1 < 5 and np.isfinite(row.psnr) and -1 <= row.ssim <= 1
    assert row.l1_volume < row.l1  # the background (0 in, ~0 out) dilutes the whole-volume L1
    sid = index.scan_id[0]
    src = nib.load(index.source[0])
    for kind in ("input", "recon"):
        img = nib.load(tmp_path / f"{sid}_{kind}.nii.gz")
        assert img.shape == src.shape == (240, 240, 155)
        assert np.allclose(img.affine, AFFINE) and np.allclose(img.affine, src.affine)
    inp = np.asarray(nib.load(tmp_path / f"{sid}_input.nii.gz").dataobj)
    rec = np.asarray(nib.load(tmp_path / f"{sid}_recon.nii.gz").dataobj)
    raw = np.asarray(src.dataobj, dtype=np.float32)
    crop = crop_to_model(raw) > 0
    # same voxels in world space: the written input equals the preprocessed scan inside the crop
    assert np.allclose(crop_to_model(inp), crop_to_model(raw), rtol=1e-3)
    rec_brain = crop_to_model(rec) > 0
    assert not (rec_brain & ~crop).any() and rec_brain.sum() > 0.5 * crop.sum()  # only inside the input's brain
    man = pd.read_parquet(root / "results" / "metadata" / "manifest.parquet")
    assert set(man.split) == {"train", "test"}


def test_cli_export_and_reconstruct(trained, tmp_path):
    """The commands the Snakemake rules run, on the fixture's trained tokenizer."""
    import yaml

    from braing3n.cli import main

    config, root, _ = trained
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**config, "train": {"decoder": {"eval_max_scans": 1, "eval_nifti": 0,
                                                                        "eval_batch_size": 1}}}))
    res = root / "results"
    assert main(["export", "--configfile", str(cfg_path), "--cohort", "phantom", "--out", str(tmp_path / "e.npz")]) == 0
    assert np.load(tmp_path / "e.npz")["latent"].shape == (4, 1200, 32)
    out = tmp_path / "tables" / "reconstruction.csv"
    assert main(["reconstruct", "--configfile", str(cfg_path), "--out", str(out)]) == 0
    table = read_table(out)[0]
    assert list(table.scan_id) == ["phantom_sub-03_ses-bl_T1"]  # the held-out (test split) scan only
    assert "provenance" in out.read_text() and (tmp_path / "tables" / "reconstruction_summary.csv").exists()
    assert main(["export", "--configfile", str(cfg_path), "--cohort", "nosuch", "--out", str(tmp_path / "x.npz")]) == 1
    assert (res / "models" / "decoder" / "config.json").exists()


def test_decoder_on_cpu_matches_float64():
    """CPU GroupNorm on channels-last tensors was off by ~1e-2 and thread-dependent; contiguous is exact to 1e-5."""
    import copy

    from braing3n.models.decoder import TokenizerModel, decoder_config
    from braing3n.models.mae import mae_config

    torch.manual_seed(0)
    cfg = decoder_config("tiny")
    dec = TokenizerModel(mae_config("tiny"), cfg).decoder.eval()  # as the tokenizer builds it
    z = torch.randn(1, cfg.latent_dim, 10, 12, 10) * 2 + 1
    with torch.no_grad():
        out, ref = dec(z), copy.deepcopy(dec).double()(z.double())
    assert out.shape == (1, 1, 160, 192, 160)
    assert (out.double() - ref).abs().max() < 1e-4
