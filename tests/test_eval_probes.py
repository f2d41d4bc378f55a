"""Linear probes, the task panel and the paired-bootstrap comparison, on synthetic data with known answers."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from braing3n.evaluate.compare import compare_encoders, paired_bootstrap, summary_line
from braing3n.evaluate.probes import outer_folds, pool_rows, run_probe
from braing3n.evaluate.tasks import load_panel, run_panel, select_rows

REPO = Path(__file__).resolve().parents[1]


def _subjects(n_subj=60, per=2, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"s{i:03d}" for i in range(n_subj)], per)
    return rng, groups


def test_grouped_folds_never_leak_a_subject():
    rng, groups = _subjects(50, 3)
    y = np.repeat(rng.integers(0, 2, 50), 3).astype(str)
    for classification in (True, False):
        folds = outer_folds(y, groups, 5, seed=1, classification=classification)
        assert len(folds) == 5
        seen = np.zeros(len(y), int)
        for tr, te in folds:
            assert not set(groups[tr]) & set(groups[te])
            seen[te] += 1
        assert (seen == 1).all()  # every row is tested exactly once



def test_penalty_search_never_splits_a_subject(monkeypatch):
    """The inner folds that pick the L2 penalty are subject-grouped too; when none keep every class
    (a class held by one subject) the penalty is fixed instead of tuned on scan-level folds."""
    import sklearn.linear_model as lm

    from braing3n.evaluate import probes

    seen = []

    class Spy(lm.LogisticRegressionCV):
        def fit(self, x, y, **kw):
            seen.append(self.cv)
            return super().fit(x, y, **kw)

    monkeypatch.setattr(probes, "LogisticRegressionCV", Spy)
    rng, groups = _subjects(12, 3)
    y = np.repeat(["a"] * 6 + ["b"] * 5 + ["c"], 3)  # class c: one subject, three scans
    x = rng.normal(size=(len(y), 8))
    assert probes._inner_cv(y, groups, 0, True) is None
    proba, classes = probes.fit_predict(x, y, groups, x[:2], True, seed=0)
    assert classes == ["a", "b", "c"] and proba.shape == (2, 3) and seen == []  # fixed penalty, no CV
    keep = y != "c"
    probes.fit_predict(x[keep], y[keep], groups[keep], x[:2], True, seed=0)
    assert len(seen) == 1 and not isinstance(seen[0], int)
    for tr, te in seen[0]:
        assert not set(groups[keep][tr]) & set(groups[keep][te])
    # regression: RidgeCV gets the grouped folds; with one subject there are none and the penalty
    # is fixed (RidgeCV's default would be leave-one-scan-out)
    ridge_cv = []
    monkeypatch.setattr(probes, "RidgeCV", lambda **kw: ridge_cv.append(kw["cv"]) or lm.RidgeCV(**kw))
    age = x[:, 0] * 3 + 50
    probes.fit_predict(x, age, groups, x[:2], False, seed=0)
    assert len(ridge_cv) == 1 and all(not set(groups[tr]) & set(groups[te]) for tr, te in ridge_cv[0])
    pred, _ = probes.fit_predict(x[:3], age[:3], groups[:3], x[:2], False, seed=0)  # subject s000 alone
    assert len(ridge_cv) == 1 and pred.shape == (2,)

def test_probe_on_noise_is_at_chance():
    rng, groups = _subjects(80, 2)
    y = np.repeat(rng.integers(0, 2, 80), 2).astype(str)
    x = rng.normal(size=(len(y), 16))
    res = run_probe(x, y, groups, "classification", n_splits=5, seed=0, n_boot=200)
    lo, hi = res.ci["auroc"]
    assert lo < 0.5 < hi
    assert abs(res.metrics["auroc"] - 0.5) < 0.15


def test_probe_on_planted_signal_is_high():
    rng, groups = _subjects(60, 2)
    y = np.repeat(rng.integers(0, 2, 60), 2)
    x = rng.normal(size=(len(y), 16))
    x[:, 0] += 3.5 * y
    res = run_probe(x, y.astype(str), groups, "classification", n_splits=5, seed=0, n_boot=100)
    assert res.metrics["auroc"] > 0.9 and res.ci["auroc"][0] > 0.8
    assert res.metrics["balanced_accuracy"] > 0.8
    # regression: age = linear in two features + small noise
    age = 50 + 10 * x[:, 1] - 5 * x[:, 2] + rng.normal(0, 1, len(y))
    reg = run_probe(x, age, groups, "regression", n_splits=5, seed=0, n_boot=100)
    assert reg.metrics["pearson_r"] > 0.95 and reg.metrics["r2"] > 0.9 and reg.metrics["mae"] < 2.0
    lo, hi = reg.ci["pearson_r"]
    assert lo <= reg.metrics["pearson_r"] <= hi


def test_multiclass_probe_macro_auroc():
    rng, groups = _subjects(90, 1)
    y = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 8))
    x[np.arange(90), y] += 3.0
    res = run_probe(x, np.array(["A", "B", "C"])[y], groups, "classification", n_splits=3, seed=0, n_boot=50)
    assert res.classes == ["A", "B", "C"] and res.y_pred.shape == (90, 3)
    assert res.metrics["auroc"] > 0.9
    np.testing.assert_allclose(res.y_pred.sum(1), 1.0, atol=1e-6)


def test_pool_rows_averages_sessions():
    x = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    pooled, keys = pool_rows(x, ["b/1", "a/1", "b/1"])
    assert keys == ["a/1", "b/1"]
    np.testing.assert_allclose(pooled, [[3.0, 2.0], [3.0, 2.5]])


def test_paired_bootstrap_win_tie_loss():
    rng, groups = _subjects(80, 1)
    y = rng.integers(0, 2, 80)
    good = np.c_[1 - (0.8 * y + 0.1), 0.8 * y + 0.1] + rng.normal(0, 0.05, (80, 2))
    noise = rng.uniform(size=(80, 2))
    ys = y.astype(str)
    cls = ["0", "1"]
    win = paired_bootstrap("classification", ys, good, noise, cls, groups, "auroc", 200, 0)
    # no resample where the noise does as well: the smallest p 200 resamples can show, not 0
    assert win["verdict"] == "win" and win["p_value"] == pytest.approx(2 / 201)
    assert paired_bootstrap("classification", ys, noise, good, cls, groups, "auroc", 200, 0)["verdict"] == "loss"
    assert win["n_boot_valid"] == 200  # every resample holds both classes
    # one positive subject among 10: resamples that miss it have no AUROC; they are counted, not hidden
    y1 = np.zeros(20, int)
    y1[:2] = 1
    g1 = np.repeat(np.arange(10), 2)
    few = paired_bootstrap("classification", y1.astype(str), good[:20], noise[:20], cls, g1.astype(str),
                           "auroc", 200, 0)
    assert 0 < few["n_boot_valid"] < 200
    none = paired_bootstrap("classification", np.zeros(20, int).astype(str), good[:20], noise[:20], cls,
                            g1.astype(str), "auroc", 50, 0)
    assert none["verdict"] == "n/a" and none["n_boot_valid"] == 0
    tie = paired_bootstrap("classification", ys, good, good.copy(), cls, groups, "auroc", 200, 0)
    assert tie["verdict"] == "tie" and tie["diff"] == 0 and tie["p_value"] == 1.0
    # a small edge: p is twice the share of resamples on the losing side, a tie at the 95% level
    edge = np.clip(good + rng.normal(0, 0.6, good.shape), 0, 1)
    close = paired_bootstrap("classification", ys, edge, np.clip(edge + rng.normal(0, 0.3, good.shape), 0, 1),
                             cls, groups, "auroc", 400, 0)
    assert 0.05 < close["p_value"] < 1.0 and close["verdict"] == "tie", close
    # lower-is-better metric: MAE
    t = rng.normal(50, 10, 80)
    r = paired_bootstrap("regression", t, t + rng.normal(0, 1, 80), t + rng.normal(0, 8, 80), [], groups,
                         "mae", 200, 0)
    assert r["verdict"] == "win" and r["diff"] < 0


def _manifest(n_subj=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subj):
        sex = "MF"[i % 2]
        age = float(rng.uniform(20, 80))
        for mod in ("T1", "FLAIR"):
            rows.append({"cohort": "c", "subject_id": f"s{i:02d}", "session_id": "1", "scan_id": f"s{i:02d}_{mod}",
                         "modality": mod, "sex": sex, "age": age, "diagnosis": "HC" if i < 25 else "AD",
                         "mmse": np.nan})
    return pd.DataFrame(rows)


def test_panel_runs_skips_with_reason_and_compares(tmp_path):
    tasks = load_panel(REPO / "config" / "probes.yaml")
    assert len(tasks) == 23 and len({t.name for t in tasks}) == 23
    man = _manifest()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(len(man), 6))
    x[:, 0] += 3 * (man["sex"] == "M")
    x[:, 1] += man["age"] / 10
    emb_good = {"mean": {"scan_id": man["scan_id"].to_numpy(), "x": x}}
    emb_noise = {"mean": {"scan_id": man["scan_id"].to_numpy(), "x": rng.normal(size=x.shape)}}
    panel = [t for t in tasks if t.name in ("sex", "age", "mmse", "hc_vs_pd", "modality")]
    tab, pred = run_panel(man, emb_good, panel, "mae", seed=0, n_splits=4, n_boot=50)
    tab2, pred2 = run_panel(man, emb_noise, panel, "random_vit", seed=0, n_splits=4, n_boot=50)
    ok = tab[tab.status == "ok"].set_index(["task", "view"])
    assert ok.loc[("sex", "pooled"), "auroc"] > 0.9
    assert ok.loc[("age", "T1"), "pearson_r"] > 0.8
    reason = tab[tab.status == "skipped"].groupby("task")["reason"].first()
    assert "no rows" in reason["mmse"] and reason["hc_vs_pd"] == "only one class (HC)"
    assert ok.loc[("modality", "all"), "auroc"] > 0.4  # T1 vs FLAIR in the 'all' view only
    cmp = compare_encoders(pd.concat([pred, pred2]), "mae", n_boot=100, seed=0)
    verdict = cmp.set_index(["task", "view"])["verdict"]
    assert verdict[("sex", "pooled")] == "win" and verdict[("age", "pooled")] == "win"
    assert summary_line(cmp, "mae").startswith("mae wins or ties on 3 of 3 tasks")


def test_select_rows_derived_and_missing():
    man = pd.DataFrame({"scan_id": ["a", "b", "c"], "subject_id": ["1", "2", "3"], "diagnosis": ["HC"] * 3,
                        "cohort": ["x"] * 3, "apoe_e4_count": [0, 2, np.nan]})
    task = next(t for t in load_panel(REPO / "config" / "probes.yaml") if t.name == "apoe_e4_carrier")
    df, why = select_rows(man, task)
    assert why == "" and df["y"].tolist() == ["non_carrier", "carrier"]
    idh = next(t for t in load_panel(REPO / "config" / "probes.yaml") if t.name == "idh1")
    assert select_rows(man, idh)[1] == "column 'idh1' not in manifest"


def test_bad_panel_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("tasks:\n  - {name: x, kind: ordinal, target: age}\n")
    with pytest.raises(ValueError, match="p.yaml: task x: kind"):
        load_panel(bad)
