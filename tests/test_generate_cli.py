"""`braing3n generate` / `braing3n forecast` end to end at full latent size (1200 x 32) with a tiny DiT.

The tokenizer is a linear stand-in (16^3 average pool / nearest upsample) so these tests do not
depend on a trained MAE; the real one is exercised by the demo."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from braing3n.atlas import AFFINE, atlas_paths
from braing3n.generate import cli as gen_cli
from braing3n.generate import forecast as fc
from braing3n.generate.tasks import build_task
from braing3n.provenance import read_table
from braing3n.train.engine import TrainConfig, fit

torch.set_num_threads(1)
EXTRA = {"preset": "tiny", "hidden": 32, "depth": 1, "heads": 4}


class PoolTokenizer:
    """Linear autoencoder: 16^3 patches -> patch mean in channel 0 (others 0); decode = upsample."""

    device = torch.device("cpu")

    def encode(self, vols):
        pooled = F.avg_pool3d(vols.float(), 16).flatten(2).transpose(1, 2)  # [B, 1200, 1]
        return {"latent": F.pad(pooled, (0, 31))}

    def decode(self, latent):
        grid = latent[..., 0].reshape(-1, 1, 10, 12, 10)
        return F.interpolate(grid, scale_factor=16, mode="nearest")


@pytest.fixture(autouse=True)
def stand_in_tokenizer(monkeypatch):
    monkeypatch.setattr(gen_cli, "load_tokenizer", lambda d, device: PoolTokenizer())


def _cfg(steps=3):
    return TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup_steps=1, ckpt_every=100, log_every=1, seed=0,
                       num_workers=0, grad_clip=1.0, device="cpu", ema_decay=0.0, extra=EXTRA)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    rng = np.random.default_rng(0)
    n = 8
    rows = pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "diagnosis": ["HC", "AD"] * 4, "sex": "F",
                         "modality": "T1", "site": None, "idh1": None, "age": np.linspace(50, 80, n),
                         "years": np.linspace(1, 4, n)})
    lat = rng.standard_normal((n, 1200, 32)).astype(np.float32)
    fit(build_task("dit", rows, lat, EXTRA, 4), _cfg(), tmp / "dit")
    fit(build_task("dit_long", rows, lat, EXTRA, 4, context=lat[::-1].copy()), _cfg(), tmp / "dit_long")
    return tmp


def test_generate_writes_atlas_nifti_mosaic_and_table_reproducibly(models, tmp_path):
    args = ["--model-dir", str(models / "dit"), "--tokenizer-dir", "unused", "--disease", "AD", "--sex", "F",
            "--age", "72", "--modality", "T1", "--n", "2", "--cfg", "2.0", "--steps", "2", "--device", "cpu"]
    assert gen_cli.main([*args, "--seed", "0", "--out", str(tmp_path / "a")]) == 0
    assert gen_cli.main([*args, "--seed", "0", "--out", str(tmp_path / "b")]) == 0
    assert gen_cli.main([*args, "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    img = nib.load(tmp_path / "a" / "sample_000.nii.gz")
    assert img.shape == (240, 240, 155) and np.allclose(img.affine, AFFINE)
    a = [nib.load(tmp_path / "a" / f"sample_00{k}.nii.gz").get_fdata() for k in (0, 1)]
    b = nib.load(tmp_path / "b" / "sample_000.nii.gz").get_fdata()
    c = nib.load(tmp_path / "c" / "sample_000.nii.gz").get_fdata()
    assert np.array_equal(a[0], b) and not np.array_equal(a[0], c) and not np.array_equal(a[0], a[1])
    assert a[0][:40].std() == 0  # outside the 160x192x160 model crop stays 0
    assert (tmp_path / "a" / "mosaic.png").stat().st_size > 1000
    table = (tmp_path / "a" / "samples.csv").read_text()
    assert "cond_disease" in table and "# provenance:" in table
    assert np.load(tmp_path / "a" / "latents.npy").shape == (2, 1200, 32)
    assert not (tmp_path / "a.tmp").exists()


def test_generate_errors_are_one_line(models, tmp_path, capsys):
    base = ["--model-dir", str(models / "dit"), "--n", "1", "--steps", "1", "--device", "cpu", "--no-decode"]
    assert gen_cli.main([*base, "--disease", "GBM", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "GBM" in err and "known values" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert gen_cli.main(["--model-dir", str(tmp_path / "nope"), "--no-decode", "--out", str(tmp_path / "y")]) == 1
    assert "generator.json" in capsys.readouterr().err


def test_forecast_from_atlas_space_baseline(models, tmp_path):
    baseline = atlas_paths().t1_brain
    assert fc.is_atlas_space(nib.load(baseline))
    args = ["--baseline", str(baseline), "--years", "3", "--age", "70", "--disease", "AD", "--sex", "F",
            "--model-dir", str(models / "dit_long"), "--tokenizer-dir", "unused", "--steps", "2",
            "--device", "cpu", "--out", str(tmp_path / "f")]
    assert fc.main(args) == 0
    out = tmp_path / "f"
    vols = {k: nib.load(out / f"{k}.nii.gz") for k in ("baseline", "baseline_recon", "forecast", "difference")}
    assert all(v.shape == (240, 240, 155) and np.allclose(v.affine, AFFINE) for v in vols.values())
    d = {k: v.get_fdata() for k, v in vols.items()}
    np.testing.assert_allclose(d["difference"], d["forecast"] - d["baseline_recon"], atol=1e-4)
    brain = d["baseline"] != 0
    assert abs(d["baseline"][brain].mean()) < 1e-3 and abs(d["baseline"][brain].std() - 1) < 1e-3  # z-scored
    # the stand-in tokenizer reconstructs 16^3 patch means: encode/decode went through the right grid
    assert abs(d["baseline_recon"].sum() - d["baseline"].sum()) < 1e-3 * np.abs(d["baseline"]).sum()
    assert (out / "forecast.png").exists()
    row = read_table(out / "forecast.csv")[0]
    assert row.loc[0, "years"] == 3.0 and row.loc[0, "cond_disease"] == "AD"


def test_atlas_space_baseline_may_carry_a_singleton_fourth_axis(tmp_path):
    vol = np.random.default_rng(0).random((240, 240, 155, 1)).astype(np.float32)
    path = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti1Image(vol, AFFINE), str(path))
    out = fc.load_baseline(path, tmp_path / "work", None)  # atlas space: no preprocessing
    assert out.shape == (240, 240, 155) and np.array_equal(out, vol[..., 0])
    nib.save(nib.Nifti1Image(np.repeat(vol, 2, axis=3), AFFINE), str(path))
    assert not fc.is_atlas_space(nib.load(str(path)))  # two volumes: not a baseline as it stands


def test_forecast_refuses_cross_sectional_model(models, tmp_path, capsys):
    args = ["--baseline", str(atlas_paths().t1_brain), "--model-dir", str(models / "dit"), "--tokenizer-dir", "x",
            "--device", "cpu", "--out", str(tmp_path / "g")]
    assert fc.main(args) == 1
    assert "longitudinal" in capsys.readouterr().err


def test_generator_json_is_self_contained(models):
    meta = json.loads((models / "dit" / "generator.json").read_text())
    assert meta["kind"] == "dit" and len(meta["latent_norm"]["mean"]) == 32
    assert meta["model"]["grid"] == [10, 12, 10] and meta["vocabulary"]["categorical"]["disease"] == ["AD", "HC"]


def test_generate_with_the_real_tokenizer_api(models, tmp_path, monkeypatch):
    """Same CLI through braing3n.tokenizer.load_tokenizer on a tiny tokenizer folder (random weights)."""
    from braing3n.models.decoder import TokenizerModel, decoder_config
    from braing3n.models.mae import mae_config
    from braing3n.tokenizer import load_tokenizer
    from braing3n.train.checkpoint import save_weights

    monkeypatch.setattr(gen_cli, "load_tokenizer", load_tokenizer)
    torch.manual_seed(0)
    mae, dec = mae_config("tiny"), decoder_config("tiny")
    tok_dir = tmp_path / "decoder"
    tok_dir.mkdir()
    save_weights(TokenizerModel(mae, dec).state_dict(), tok_dir / "final.safetensors")
    (tok_dir / "config.json").write_text(json.dumps({"model": {"mae": mae.to_dict(), "decoder": dec.to_dict()}}))
    args = ["--model-dir", str(models / "dit"), "--tokenizer-dir", str(tok_dir), "--n", "1", "--steps", "1",
            "--device", "cpu", "--out", str(tmp_path / "s")]
    assert gen_cli.main(args) == 0
    img = nib.load(tmp_path / "s" / "sample_000.nii.gz")
    vol = img.get_fdata()
    assert img.shape == (240, 240, 155) and np.isfinite(vol).all() and vol[40:200, 24:216].std() > 0


def test_forecast_routes_raw_scans_through_preprocessing(models, tmp_path, monkeypatch):
    """A non-atlas-space baseline goes through the preprocess chain; an atlas-space one does not."""
    calls = []
    atlas_vol = atlas_paths().t1_brain

    def fake_chain(path, work_dir, config):
        calls.append(path)
        return atlas_vol

    monkeypatch.setattr(fc, "preprocess_raw_t1", fake_chain)
    raw = tmp_path / "raw_T1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((64, 64, 40), np.float32), np.diag([2.0, 2.0, 4.0, 1.0])), raw)
    assert fc.load_baseline(raw, tmp_path, None).shape == (240, 240, 155) and calls == [raw]
    fc.load_baseline(atlas_vol, tmp_path, None)
    assert calls == [raw]
    with pytest.raises(FileNotFoundError, match="baseline scan not found"):
        fc.load_baseline(tmp_path / "missing.nii.gz", tmp_path, None)


def test_auto_baseline_is_a_heldout_t1_pair(tmp_path):
    from braing3n.paths import Layout

    lay = Layout(str(tmp_path))
    (tmp_path / "metadata").mkdir()
    rows = []
    for subj, split in (("a", "train"), ("b", "test"), ("c", "val")):
        row = {"subject_id": f"demo:{subj}", "split": split, "baseline_session": "bl", "interval_years": 2.0,
               "age_baseline": 70.0, "diagnosis_baseline": "MCI", "sex": "F"}
        row |= {f"{w}_scan_id_T1": f"demo_sub-{subj}_ses-{s}_T1" for w, s in (("baseline", "bl"), ("followup", "m24"))}
        rows.append(row)
    pd.DataFrame(rows).to_parquet(lay.pairs)
    pick = fc.pick_heldout_baseline(lay)
    assert pick["scan_id"] == "demo_sub-b_ses-bl_T1" and pick["disease"] == "MCI" and pick["true_years"] == 2.0
    path = fc.atlas_path_of(pick["scan_id"], lay)
    assert str(path).endswith("preprocessed/demo/sub-b/ses-bl/anat/sub-b_ses-bl_space-SRI24_T1w.nii.gz")
    with pytest.raises(ValueError, match="not of the form"):
        fc.atlas_path_of("garbage", lay)


def test_out_never_deletes_a_folder_that_is_not_an_earlier_output(models, tmp_path, capsys):
    """--out used to be replaced wholesale: a user's folder, or the forecast's own baseline, was deleted."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("the user's file")
    base = ["--model-dir", str(models / "dit"), "--n", "1", "--steps", "1", "--device", "cpu", "--no-decode"]
    assert gen_cli.main([*base, "--out", str(mine)]) == 1
    err = capsys.readouterr().err
    assert "not an earlier output" in err and len(err.strip().splitlines()) == 1
    assert (mine / "keep.txt").read_text() == "the user's file"
    # an earlier output is replaced (rerun), with nothing left beside it
    assert gen_cli.main([*base, "--out", str(tmp_path / "arm")]) == 0
    assert gen_cli.main([*base, "--seed", "3", "--out", str(tmp_path / "arm")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm", "mine"]
    # a forecast whose --out holds its baseline
    patient = tmp_path / "patient"
    patient.mkdir()
    scan = patient / "t1.nii.gz"
    scan.write_bytes(atlas_paths().t1_brain.read_bytes())
    args = ["--baseline", str(scan), "--model-dir", str(models / "dit_long"), "--tokenizer-dir", "x",
            "--steps", "1", "--device", "cpu", "--out", str(patient)]
    assert fc.main(args) == 1 and scan.exists()
    assert "holds the input" in capsys.readouterr().err


def test_forecast_bad_inputs_are_one_line_and_leave_nothing(models, tmp_path, capsys):
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    nan = tmp_path / "nan.nii.gz"
    vol = np.asarray(nib.load(atlas_paths().t1_brain).dataobj, dtype=np.float32)
    vol[100, 100, 80] = np.nan
    nib.save(nib.Nifti1Image(vol, AFFINE), str(nan))
    good = str(atlas_paths().t1_brain)
    common = ["--model-dir", str(models / "dit_long"), "--tokenizer-dir", "x", "--steps", "1", "--device", "cpu"]
    cases = [(["--baseline", str(text)], "not a readable NIfTI image"),
             (["--baseline", str(nan)], "1 NaN/Inf voxels"),
             (["--baseline", good, "--years", "-5"], "finite number of years >= 0"),
             (["--baseline", good, "--age", "inf"], "finite number"),
             (["--baseline", good, "--disease", "GBM"], "known values"),
             (["--baseline", good, "--n", "0"], "at least 1")]
    for k, (extra, message) in enumerate(cases):
        out = tmp_path / f"f{k}"
        assert fc.main([*extra, *common, "--out", str(out)]) == 1, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (extra, err)
        assert not out.exists() and not out.with_name(out.name + ".tmp").exists(), extra


def test_an_atlas_space_baseline_in_another_orientation_is_reoriented_not_preprocessed(tmp_path, monkeypatch):
    """An SRI24-space scan saved as RAS (another tool's convention) is the same voxels: reoriented
    losslessly, as the store does, instead of going through N4 + HD-BET + registration again."""
    lps = nib.load(atlas_paths().t1_brain)
    ras = nib.as_closest_canonical(lps)  # flips i and j; same world box
    assert not fc.is_atlas_space(ras)
    nib.save(ras, str(tmp_path / "ras.nii.gz"))
    monkeypatch.setattr(fc, "preprocess_raw_t1", lambda *a: pytest.fail("preprocessed an atlas-space scan"))
    out = fc.load_baseline(tmp_path / "ras.nii.gz", tmp_path / "work", None)
    assert np.array_equal(out, np.asarray(lps.dataobj, dtype=np.float32))
