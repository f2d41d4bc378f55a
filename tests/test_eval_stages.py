"""The evaluation stages against the real upstream APIs on a tiny results tree: store volumes,
a random-weight tiny tokenizer, 3-step tiny DiT / DiT-long, a 1-step AutoencoderKL.
Checks wiring, output tables and their provenance - not model quality (that is the demo's job)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from braing3n.evaluate.cli import main as evaluate_main
from braing3n.provenance import read_table
from braing3n.report import main as report_main

torch.set_num_threads(1)
pytestmark = pytest.mark.slow
EXTRA = {"preset": "tiny", "hidden": 32, "depth": 1, "heads": 4}
N_SUBJ = 8


def _train_cfg(steps=3):
    from braing3n.train.engine import TrainConfig

    return TrainConfig(steps=steps, batch_size=2, lr=1e-3, warmup_steps=1, ckpt_every=100, log_every=1, seed=0,
                       num_workers=0, grad_clip=1.0, device="cpu", ema_decay=0.0, extra=EXTRA)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from braing3n.data.loader import zscore
    from braing3n.generate.tasks import build_task
    from braing3n.models.decoder import TokenizerModel, decoder_config
    from braing3n.models.mae import mae_config
    from braing3n.tokenizer import load_tokenizer
    from braing3n.train.checkpoint import save_weights
    from braing3n.train.engine import fit

    tmp = tmp_path_factory.mktemp("evalstages")
    root = tmp / "results"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_SUBJ):
        for ses, years in (("1", 0.0), ("2", 2.0)) if i < 4 else (("1", 0.0),):
            rows.append({"cohort": "c1", "subject_id": f"s{i}", "session_id": ses, "scan_id": f"c1_s{i}_{ses}_T1",
                         "modality": "T1", "sex": "FM"[i % 2], "age": 40.0 + 4 * i + years,
                         "diagnosis": ["HC", "AD"][i % 2], "idh1": None, "site": "a",
                         "split": "train" if i < 6 and i != 3 else "test"})  # s3: a held-out longitudinal pair
    man = pd.DataFrame(rows)
    (root / "metadata").mkdir(parents=True)
    man.to_parquet(root / "metadata" / "manifest.parquet", index=False)
    pairs = pd.DataFrame({"subject_id": [f"s{i}" for i in range(4)], "interval_years": 2.0,
                          "baseline_scan_id_T1": [f"c1_s{i}_1_T1" for i in range(4)],
                          "followup_scan_id_T1": [f"c1_s{i}_2_T1" for i in range(4)]})
    for m in ("T2", "FLAIR", "T1c"):
        pairs[f"baseline_scan_id_{m}"] = None
        pairs[f"followup_scan_id_{m}"] = None
    pairs.to_parquet(root / "metadata" / "pairs.parquet", index=False)
    store = root / "store" / "c1"
    store.mkdir(parents=True)
    for sid in man["scan_id"]:
        vol = np.zeros((160, 192, 160), np.float16)
        vol[30:130, 40:150, 30:130] = rng.uniform(50, 150, (100, 110, 100))
        np.save(store / f"{sid}.npy", vol)
    pd.DataFrame({"scan_id": man["scan_id"], "path": [f"{s}.npy" for s in man["scan_id"]], "status": "ok"}).to_parquet(
        store / "index.parquet", index=False)
    torch.manual_seed(0)
    mae, dec = mae_config("tiny"), decoder_config("tiny")
    tok_dir = root / "models" / "decoder"
    tok_dir.mkdir(parents=True)
    save_weights(TokenizerModel(mae, dec).state_dict(), tok_dir / "final.safetensors")
    (tok_dir / "config.json").write_text(json.dumps({"model": {"mae": mae.to_dict(), "decoder": dec.to_dict()}}))
    tok = load_tokenizer(tok_dir, "cpu")
    vols = torch.from_numpy(np.stack([np.load(store / f"{s}.npy") for s in man["scan_id"]]))[:, None]
    enc = {k: [] for k in ("latent", "cls", "mean")}
    for v in vols:
        out = tok.encode(zscore(v[None]))
        for k in enc:
            enc[k].append(out[k].numpy())
    enc = {k: np.concatenate(v) for k, v in enc.items()}
    (root / "embeddings").mkdir()
    np.savez(root / "embeddings" / "c1.npz", scan_id=man["scan_id"].to_numpy(str), **enc)
    lat = enc["latent"]
    fit(build_task("dit", man, lat, EXTRA, 2), _train_cfg(), root / "models" / "dit")
    pr = man[man.session_id == "1"].head(4).assign(years=2.0)
    fol = lat[[man.index[man.scan_id == f"c1_s{i}_2_T1"][0] for i in range(4)]]
    fit(build_task("dit_long", pr, fol, EXTRA, 2, context=lat[pr.index]), _train_cfg(), root / "models" / "dit_long")
    cfg = {"results": str(root), "seed": 0, "device": "cpu", "cohorts": {"c1": {"mapping": "x.yaml", "root": "x"}},
           "evaluate": {"n_boot": 10, "n_splits": 2, "batch_size": 2,
                        "guidance": {"scales": [1, 4], "n_per_value": 2, "steps": 2,
                                     "conditions": {"sex": ["F", "M"], "age": [40]}},
                        "fid": {"cfg_scale": 1, "n_boot": 5, "max_real": 2},
                        "longitudinal": {"steps": 2, "max_pairs": 2},
                        "tokenizers": {"bottlenecks": [4], "max_scans": 1}},
           "train": {"engine": {"steps": 1, "batch_size": 1, "lr": 1e-3, "warmup_steps": 0, "ckpt_every": 1,
                                "log_every": 1, "num_workers": 0, "grad_clip": 1.0, "ema_decay": 0.0},
                     "aekl": {"latent_channels": 4, "channels": [4, 4, 4, 4, 4], "num_res_blocks": 1}}}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return tmp, root


def _eval(tmp, *args):
    return evaluate_main([args[0], "--configfile", str(tmp / "cfg.yaml"), *args[1:]])


def _table(path):
    text = path.read_text()
    assert "# provenance: " in text and '"git_commit"' in text
    return read_table(path)[0]


def test_random_floor_embeddings_use_the_mae_architecture(tree):
    tmp, root = tree
    out = root / "embeddings" / "random_vit" / "c1.npz"
    assert _eval(tmp, "embed", "--encoder", "random_vit", "--cohort", "c1", "--out", str(out)) == 0
    with np.load(out) as z:
        assert z["mean"].shape == (12, 96) and z["cls"].shape == (12, 96) and list(z["scan_id"])[0] == "c1_s0_1_T1"
        assert z["grid"].shape == (12, 150 * 96)  # same grid feature as the MAE export


def test_guidance_fid_memorisation_report(tree):
    tmp, root = tree
    t = root / "tables"
    samples = root / "evaluation" / "guidance_samples.npz"
    assert _eval(tmp, "guidance", "--out", str(t / "guidance.csv"), "--figure", str(root / "figures/guidance.png"),
                 "--samples", str(samples), "--mosaic", str(root / "figures/samples_by_condition.png")) == 0
    g = _table(t / "guidance.csv")
    assert set(g["condition"]) == {"sex", "age"}
    assert set(g.loc[g.status == "ok", "cfg_scale"].astype(str)) == {"real", "1.0", "4.0"}
    with np.load(samples) as z:
        assert z["latent"].shape == (3 * 2 * 2, 1200, 32)  # 3 requested values x 2 scales x 2
    assert _eval(tmp, "fid", "--samples", str(samples), "--out", str(t / "fid.csv")) == 0
    fid = _table(t / "fid.csv")
    assert len(fid) == 3 * 3 and set(fid["extractor"]) == {"braing3n-mae-encoder-mean"}
    ok = fid[fid.status == "ok"]
    assert len(ok) > 0 and (ok["fid"] >= 0).all() and (ok["n_b"] >= 2).all()
    assert _eval(tmp, "memorisation", "--samples", str(samples), "--out", str(t / "memorisation.csv"),
                 "--per-sample", str(t / "memorisation_samples.csv")) == 0
    mem = _table(t / "memorisation.csv")
    assert mem.loc[0, "n_generated"] == 12 and mem.loc[0, "n_train"] == 8 and mem.loc[0, "n_heldout"] == 4
    # the report's pictures: 3 arms (sex F, M, age 40) x (real, reconstruction, 2 generated), 3 held-out scans
    fig_samples, fig_recon = root / "figures" / "samples_vs_real.png", root / "figures" / "reconstructions.png"
    assert _eval(tmp, "figures", "--samples", str(samples), "--out-samples", str(fig_samples),
                 "--out-reconstructions", str(fig_recon), "--n-generated", "2") == 0
    import matplotlib.image as mpimg

    from braing3n.evaluate.figures import samples_figure_size

    w, h = samples_figure_size(3, 4)
    assert mpimg.imread(fig_samples).shape[:2] == (round(h * 80), round(w * 80)) == (804, 984)
    assert mpimg.imread(fig_recon).shape[:2] == (3 * 144, 1080)
    assert report_main(["--configfile", str(tmp / "cfg.yaml")]) == 0
    page = (root / "report" / "index.html").read_text()
    assert "Decomposed 3D-FID" in page and "Guidance: does a sample show what was asked for?" in page
    gen, tok = (page.split(f'<section id="sec-{s}">')[1].split("</section>")[0] for s in ("generation", "tokenizer"))
    assert gen.index('<figure><img alt="per arm: a real scan') == gen.index("<figure>")  # the section's first figure
    assert tok.index('<figure><img alt="held-out scans: real | reconstruction') == tok.index("<figure>")


def test_guidance_fixed_conditions_restrict_the_probe_to_matching_real_scans(tree, capsys):
    tmp, root = tree
    cfg = yaml.safe_load((tmp / "cfg.yaml").read_text())
    cfg["evaluate"]["guidance"].update(conditions={"age": [40, 60]}, fixed={"sex": "F"}, scales=[1])
    (tmp / "fixed.yaml").write_text(yaml.safe_dump(cfg))
    out = root / "tables" / "guidance_fixed.csv"
    args = ["guidance", "--configfile", str(tmp / "fixed.yaml"), "--out", str(out), "--figure",
            str(tmp / "g.png"), "--samples", str(tmp / "g.npz"), "--mosaic", str(tmp / "m.png")]
    assert evaluate_main(args) == 0
    g = _table(out)
    assert g.loc[g.cfg_scale.astype(str) == "real", "n"].iloc[0] == 6  # the 6 scans of the 4 women (s0, s2, s4, s6)
    # FID compares those samples with real scans that share the held value: the age-40 arm (+-10 y)
    # holds the women's 4 scans aged 40-50 (s0 40, 42; s2 48, 50), not the men's 44-54 ones too
    cfg["evaluate"]["fid"]["max_real"] = 50
    (tmp / "fixed.yaml").write_text(yaml.safe_dump(cfg))
    fid_out = root / "tables" / "fid_fixed.csv"
    assert evaluate_main(["fid", "--configfile", str(tmp / "fixed.yaml"), "--samples", str(tmp / "g.npz"),
                          "--out", str(fid_out)]) == 0
    fid = _table(fid_out).set_index(["arm", "comparison"])
    assert fid.loc[("age=40", "generated vs real"), "n_b"] == 4 and (fid["fixed"] == "sex=F").all()
    # memorisation too: the women's training scans (s0 x2, s2 x2, s4) are the reference, and of the
    # held-out subjects (s3, s6, s7) only s6 is a woman - one scan, too few for the held-out quantile
    capsys.readouterr()
    assert evaluate_main(["memorisation", "--configfile", str(tmp / "fixed.yaml"), "--samples", str(tmp / "g.npz"),
                          "--out", str(tmp / "mem.csv"), "--per-sample", str(tmp / "mem_s.csv")]) == 1
    assert "got 5, 1, 4" in capsys.readouterr().err
    cfg["evaluate"]["guidance"]["fixed"] = {"idh": "mutant"}
    (tmp / "fixed.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert evaluate_main(args) == 1
    assert "fixed={'idh': 'mutant'}: no real scan has these values" in capsys.readouterr().err
    # a condition both held and swept would be guided against itself: refused in one line
    cfg["evaluate"]["guidance"].update(fixed={"sex": "F"}, conditions={"sex": ["F", "M"]})
    (tmp / "fixed.yaml").write_text(yaml.safe_dump(cfg))
    assert evaluate_main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "['sex'] both fixed and swept" in err and len(err.splitlines()) == 1, err


def test_longitudinal_stage(tree):
    tmp, root = tree
    t = root / "tables"
    assert _eval(tmp, "longitudinal", "--out", str(t / "longitudinal.csv"),
                 "--per-pair", str(t / "longitudinal_pairs.csv")) == 0
    summary = _table(t / "longitudinal.csv").set_index("pairs")
    # max_pairs = 2 of 4 pairs: the held-out one (s3, test split) first, then a pair dit_long trained on
    held, fitted = summary.loc["held-out"], summary.loc["in-sample (dit_long trained on them)"]
    assert held["n_pairs"] == 1 and fitted["n_pairs"] == 1
    assert 0 <= fitted["change_fraction_csf_ventricles"] <= 1
    assert summary["age_probe_trained_on"].eq("subjects outside the pairs").all()  # s4..s7 have ages
    per_pair = _table(t / "longitudinal_pairs.csv")
    assert per_pair["subject_id"].tolist() == ["s3", "s0"] and per_pair["split"].tolist() == ["test", "train"]
    assert (per_pair["latent_mae"] > 0).all() and (per_pair["voxel_l1"] > 0).all()


def test_tokenizer_comparison_with_a_trained_aekl(tree):
    from braing3n.data.loader import VolumeDataset
    from braing3n.data.store import read_index
    from braing3n.models.aekl import AEKLConfig, AEKLTask
    from braing3n.train.engine import fit, train_config

    tmp, root = tree
    config = yaml.safe_load((tmp / "cfg.yaml").read_text())
    cfg = train_config(config, "aekl")
    ds = VolumeDataset(read_index(root / "store" / "c1" / "index.parquet").head(1))
    fit(AEKLTask(AEKLConfig(latent_channels=4, channels=(4, 4, 4, 4, 4), num_res_blocks=1), ds, cfg),
        cfg, root / "models" / "aekl_4")
    out = root / "tables" / "tokenizers.csv"
    assert _eval(tmp, "tokenizers", "--aekl", str(root / "models" / "aekl_4"), "--out", str(out)) == 0
    tab = _table(out).set_index("tokenizer")
    assert list(tab.index) == ["mae", "aekl_4"]
    assert tab.loc["mae", "latent_numbers"] == 1200 * 32 and tab.loc["aekl_4", "dims_per_position"] == 4
    assert (tab["psnr"] > 0).all() and tab["ssim"].between(-1, 1).all()
    assert str(tab.loc["mae", "idh1_auroc"]).startswith("skipped:")


def test_stages_read_the_model_folders_the_rules_declare(tree):
    """generate.model_dir / tokenizer_dir (a generator and tokenizer trained elsewhere) are what the
    guidance rule declares as inputs; the stage used to load {results}/models/* regardless."""
    import shutil

    tmp, root = tree
    ext = tmp / "external"
    shutil.copytree(root / "models" / "dit", ext / "dit")
    shutil.copytree(root / "models" / "decoder", ext / "tok")
    cfg = yaml.safe_load((tmp / "cfg.yaml").read_text())
    cfg["generate"] = {"model_dir": str(ext / "dit"), "tokenizer_dir": str(ext / "tok")}
    (tmp / "ext.yaml").write_text(yaml.safe_dump(cfg))
    hidden = [(root / "models" / n, root / "models" / f"{n}.hidden") for n in ("dit", "decoder")]
    for a, b in hidden:
        a.rename(b)
    try:
        out = tmp / "ext_guidance.csv"
        assert evaluate_main(["guidance", "--configfile", str(tmp / "ext.yaml"), "--out", str(out),
                              "--figure", str(tmp / "ext_g.png"), "--samples", str(tmp / "ext_g.npz"),
                              "--mosaic", str(tmp / "ext_m.png")]) == 0
        assert (_table(out)["status"] == "ok").any()
    finally:
        for a, b in hidden:
            b.rename(a)
