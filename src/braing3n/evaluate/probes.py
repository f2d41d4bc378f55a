"""Linear probes on frozen embeddings: grouped outer CV, inner-CV penalty, bootstrap CIs.

One probe = standardised features -> L2 logistic (multinomial when >2 classes) or ridge,
penalty chosen by inner cross-validation on the outer-training subjects only, outer folds
grouped by subject so no subject sits on both sides. Out-of-fold predictions of every unit
are kept so encoders can be compared by paired bootstrap over the same test predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

CLASSIFICATION_METRICS = ("auroc", "balanced_accuracy")
REGRESSION_METRICS = ("mae", "r2", "pearson_r")
HIGHER_IS_BETTER = {"auroc": True, "balanced_accuracy": True, "mae": False, "r2": True, "pearson_r": True}
C_GRID = np.logspace(-4, 2, 7)
ALPHA_GRID = np.logspace(-2, 4, 7)


@dataclass
class ProbeResult:
    """Out-of-fold predictions and metrics of one probe (one task, one view, one feature)."""

    kind: str  # "classification" | "regression"
    y_true: np.ndarray  # (n,) class labels (str) or targets (float)
    y_pred: np.ndarray  # (n, n_classes) probabilities or (n,) predictions
    groups: np.ndarray  # (n,) subject ids
    classes: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    ci: dict = field(default_factory=dict)  # metric -> (lo, hi)


def outer_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int,
                classification: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Subject-grouped folds (stratified for classification); n_splits capped by the number of subjects."""
    n_groups = len(np.unique(groups))
    k = max(2, min(n_splits, n_groups))
    if classification:
        # a fold split is only stratifiable when each class has >= k subjects
        min_class_groups = min(len(np.unique(groups[y == c])) for c in np.unique(y))
        k = max(2, min(k, min_class_groups))
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(y)), y, groups))
    # GroupKFold shuffles groups (sklearn >= 1.6) so the split depends on the seed, not on the order
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def _inner_cv(y, groups, seed, classification, n_splits=3):
    """Subject-grouped inner folds for the penalty search, or None when no such folds keep every
    class in each training fold (a class held by one subject): then the penalty is fixed rather
    than tuned on folds that would put one subject's scans on both sides."""
    try:
        folds = outer_folds(y, groups, n_splits, seed + 1, classification)
    except ValueError:
        return None
    if classification and any(len(np.unique(y[tr])) < len(np.unique(y)) for tr, _ in folds):
        return None
    return folds


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, groups_train: np.ndarray, x_test: np.ndarray,
                classification: bool, seed: int) -> tuple[np.ndarray, list]:
    """Standardise on train, pick the L2 penalty by grouped inner CV, predict the test rows."""
    # One scaler for the outer training fold: the inner folds that tune the penalty share its
    # statistics (their validation rows are in it), which only touches the penalty choice; the
    # outer test fold never contributes. Refitting per inner fold would forgo the warm-started
    # penalty paths of LogisticRegressionCV/RidgeCV on wide grid features.
    scaler = StandardScaler().fit(x_train)
    xtr, xte = scaler.transform(x_train), scaler.transform(x_test)
    cv = _inner_cv(y_train, groups_train, seed, classification)
    if classification:
        # newton-cholesky is ~10x faster than lbfgs on small problems but its Hessian grows as
        # (features x classes)^2, so wide multi-class probes (ViT-B, 9 diagnoses) use lbfgs
        n_coef = xtr.shape[1] * max(1, len(np.unique(y_train)) - 1)
        solver = "newton-cholesky" if n_coef <= 2048 else "lbfgs"
        if cv is None:  # no grouped folds: the grid's middle penalty
            model = LogisticRegression(C=C_GRID[len(C_GRID) // 2], solver=solver, max_iter=1000, random_state=seed)
        else:
            model = LogisticRegressionCV(Cs=C_GRID, l1_ratios=(0.0,), cv=cv, scoring="neg_log_loss", solver=solver,
                                         max_iter=1000, random_state=seed, use_legacy_attributes=False)
        model.fit(xtr, y_train)
        return model.predict_proba(xte), list(model.classes_)
    # RidgeCV's cv=None would be leave-one-scan-out, which splits a subject's scans: never used
    model = (Ridge(alpha=ALPHA_GRID[len(ALPHA_GRID) // 2]) if cv is None
             else RidgeCV(alphas=ALPHA_GRID, cv=cv))
    model.fit(xtr, y_train)
    return model.predict(xte), []


def binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUROC with tie correction (same value as sklearn's roc_auc_score, ~20x faster
    for the thousands of bootstrap calls)."""
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return np.nan
    ranks = stats.rankdata(score)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list) -> dict:
    """AUROC (macro one-vs-rest for >2 classes) and balanced accuracy."""
    classes = list(classes)
    present = np.unique(y_true)
    if len(present) < 2:
        return {"auroc": np.nan, "balanced_accuracy": np.nan}
    pred = np.asarray(classes)[np.argmax(proba, axis=1)]
    if len(classes) == 2:
        auroc = binary_auroc(y_true == classes[1], proba[:, 1])
    elif len(present) < len(classes):
        auroc = np.nan  # macro OVR needs every class in the sample
    else:
        auroc = float(np.mean([binary_auroc(y_true == c, proba[:, k]) for k, c in enumerate(classes)]))
    recalls = [np.mean(pred[y_true == c] == c) for c in present]
    return {"auroc": auroc, "balanced_accuracy": float(np.mean(recalls))}


def regression_metrics(y_true: np.ndarray, pred: np.ndarray) -> dict:
    """MAE, R2 and Pearson r (nan when either side is constant)."""
    y_true, pred = np.asarray(y_true, float), np.asarray(pred, float)
    resid = y_true - pred
    ss_tot = np.sum((y_true - y_true.mean()) ** 2)
    r2 = 1 - np.sum(resid**2) / ss_tot if ss_tot > 0 else np.nan
    if len(y_true) < 3 or np.std(y_true) == 0 or np.std(pred) == 0:
        r = np.nan
    else:
        r = float(np.corrcoef(y_true, pred)[0, 1])
    return {"mae": float(np.mean(np.abs(resid))), "r2": float(r2), "pearson_r": r}


def compute_metrics(kind: str, y_true: np.ndarray, y_pred: np.ndarray, classes: list) -> dict:
    if kind == "classification":
        return classification_metrics(y_true, y_pred, classes)
    return regression_metrics(y_true, y_pred)


def group_bootstrap_indices(groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` resamples that draw whole subjects with replacement."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        out.append(np.concatenate([members[g] for g in pick]))
    return out


def bootstrap_ci(kind: str, y_true: np.ndarray, y_pred: np.ndarray, classes: list, groups: np.ndarray,
                 n_boot: int, seed: int, level: float = 0.95) -> dict:
    """Percentile CI of every metric, resampling subjects (cluster bootstrap)."""
    names = CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS
    draws = {m: [] for m in names}
    for idx in group_bootstrap_indices(groups, n_boot, seed):
        vals = compute_metrics(kind, y_true[idx], y_pred[idx], classes)
        for m in names:
            draws[m].append(vals[m])
    alpha = (1 - level) / 2
    ci = {}
    for m in names:
        arr = np.asarray(draws[m], float)
        arr = arr[np.isfinite(arr)]
        ci[m] = (float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha))) if len(arr) else (np.nan, np.nan)
    return ci


def run_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str, n_splits: int = 5,
              seed: int = 0, n_boot: int = 1000) -> ProbeResult:
    """Grouped outer CV probe; returns out-of-fold predictions, metrics and bootstrap CIs."""
    x = np.asarray(x, np.float64)
    groups = np.asarray(groups).astype(str)
    classification = kind == "classification"
    y = np.asarray(y).astype(str) if classification else np.asarray(y, np.float64)
    classes = sorted(np.unique(y).tolist()) if classification else []
    pred = np.zeros((len(y), len(classes))) if classification else np.zeros(len(y))
    for fold, (tr, te) in enumerate(outer_folds(y, groups, n_splits, seed, classification)):
        if classification and len(np.unique(y[tr])) < len(classes):
            raise ValueError(f"outer fold {fold} lacks a class in training; lower n_splits or raise min_n")
        p, fold_classes = fit_predict(x[tr], y[tr], groups[tr], x[te], classification, seed + fold)
        if classification:
            assert fold_classes == classes
        pred[te] = p
    metrics = compute_metrics(kind, y, pred, classes)
    ci = bootstrap_ci(kind, y, pred, classes, groups, n_boot, seed) if n_boot > 0 else {}
    return ProbeResult(kind, y, pred, groups, classes, metrics, ci)


def pool_rows(x: np.ndarray, keys: list) -> tuple[np.ndarray, list]:
    """Average the rows sharing a key (e.g. a subject's scans of one session); keys in sorted order."""
    uniq = sorted(set(keys))
    index = {k: i for i, k in enumerate(uniq)}
    inv = np.array([index[k] for k in keys])
    sums = np.zeros((len(uniq), x.shape[1]))
    np.add.at(sums, inv, x)
    counts = np.bincount(inv, minlength=len(uniq))[:, None]
    return sums / counts, uniq
