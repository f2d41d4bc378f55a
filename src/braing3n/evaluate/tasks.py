"""The probe task panel (config/probes.yaml): load it, select each task's rows, run every probe.

A task below its minimum sample size is reported as skipped with the reason, never dropped.
Views: per modality (unit = scan), patient-pooled (unit = a subject's session, embeddings of
its scans averaged) and "all" (every scan, used by the modality task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from braing3n.evaluate.probes import ProbeResult, pool_rows, run_probe

MODALITIES = ("T1", "T2", "FLAIR", "T1c")
VIEWS = ("per_modality", "pooled", "all")


@dataclass
class Task:
    name: str
    kind: str
    target: str
    classes: list | None = None
    diagnoses: list | None = None
    cohorts: list | None = None
    views: list = field(default_factory=lambda: ["per_modality", "pooled"])
    min_n: int = 20
    min_per_class: int = 4


def load_panel(path: str | Path) -> list[Task]:
    """Read the task panel; one-line error naming the file and the bad task."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read probe panel: {exc}") from exc
    defaults = doc.get("defaults", {})
    tasks, seen = [], set()
    for i, spec in enumerate(doc.get("tasks", [])):
        spec = {**defaults, **spec}
        try:
            task = Task(**spec)
        except TypeError as exc:
            raise ValueError(f"{path}: task #{i} ({spec.get('name')}): {exc}") from exc
        if task.kind not in ("classification", "regression"):
            raise ValueError(f"{path}: task {task.name}: kind must be classification or regression")
        if bad := set(task.views) - set(VIEWS):
            raise ValueError(f"{path}: task {task.name}: unknown views {sorted(bad)}")
        if task.name in seen:
            raise ValueError(f"{path}: task {task.name} defined twice")
        seen.add(task.name)
        tasks.append(task)
    if not tasks:
        raise ValueError(f"{path}: no tasks")
    return tasks


def _target(manifest: pd.DataFrame, target: str) -> pd.Series | None:
    if target == "apoe_e4_carrier" and "apoe_e4_count" in manifest:
        count = pd.to_numeric(manifest["apoe_e4_count"], errors="coerce")
        return count.gt(0).map({True: "carrier", False: "non_carrier"}).where(count.notna())
    return manifest[target] if target in manifest else None


def select_rows(manifest: pd.DataFrame, task: Task) -> tuple[pd.DataFrame, str]:
    """Rows usable for ``task`` with a ``y`` column, or an empty frame and the reason."""
    y = _target(manifest, task.target)
    if y is None:
        return pd.DataFrame(), f"column '{task.target}' not in manifest"
    df = manifest.assign(y=y)
    df = df[df["y"].notna()]
    if task.kind == "classification":
        df = df.assign(y=df["y"].astype(str))
        df = df[df["y"].isin([str(c) for c in task.classes])] if task.classes else df
    else:
        df = df.assign(y=pd.to_numeric(df["y"], errors="coerce")).dropna(subset=["y"])
    if task.diagnoses:
        df = df[df["diagnosis"].isin(task.diagnoses)]
    if task.cohorts:
        df = df[df["cohort"].isin(task.cohorts)]
    if df.empty:
        return df, "no rows with a value"
    return df, ""


def check_size(df: pd.DataFrame, task: Task) -> str:
    if len(df) < task.min_n:
        return f"n={len(df)} < min_n={task.min_n}"
    if task.kind == "classification":
        per_class = df.groupby("y")["subject_id"].nunique()
        if len(per_class) < 2:
            return f"only one class ({per_class.index[0]})"
        if per_class.min() < task.min_per_class:
            return (f"class {per_class.idxmin()} has {per_class.min()} subjects"
                    f" < min_per_class={task.min_per_class}")
    elif df["y"].nunique() < 3:
        return "fewer than 3 distinct target values"
    return ""


def view_units(df: pd.DataFrame, view: str, features: np.ndarray) -> list[tuple[str, pd.DataFrame, np.ndarray]]:
    """(view name, unit table with unit/subject_id/y, features) per probe of this view."""
    out = []
    if view == "all":
        out.append(("all", df.assign(unit=df["scan_id"]), features))
    elif view == "per_modality":
        for mod in MODALITIES:
            mask = (df["modality"] == mod).to_numpy()
            if mask.any():
                sub = df[mask]
                out.append((mod, sub.assign(unit=sub["scan_id"]), features[mask]))
    else:
        keys = (df["subject_id"].astype(str) + "/" + df["session_id"].astype(str)).tolist()
        pooled, uniq = pool_rows(features, keys)
        first = df.assign(unit=keys).groupby("unit", sort=True).first().reset_index()
        assert first["unit"].tolist() == uniq
        out.append(("pooled", first, pooled))
    return out


def run_panel(manifest: pd.DataFrame, embeddings: dict[str, dict[str, np.ndarray]], tasks: list[Task],
              encoder: str, seed: int, n_splits: int, n_boot: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every task x view x feature for one encoder -> (metrics table, out-of-fold predictions).

    ``embeddings`` maps feature name ("cls", "mean") -> {"scan_id": (N,), "x": (N, D)}.
    """
    rows, preds = [], []
    for task in tasks:
        df, reason = select_rows(manifest, task)
        for feature, emb in sorted(embeddings.items()):
            index = {s: i for i, s in enumerate(emb["scan_id"])}
            sub = df[df["scan_id"].isin(index)] if not df.empty else df
            sub = sub.sort_values("scan_id", kind="stable") if not sub.empty else sub
            base = {"encoder": encoder, "task": task.name, "kind": task.kind, "feature": feature}
            if reason or sub.empty:
                rows.append({**base, "view": "-", "status": "skipped", "reason": reason or "no embeddings"})
                continue
            x = emb["x"][[index[s] for s in sub["scan_id"]]]
            for view in task.views:
                for vname, units, xv in view_units(sub, view, x):
                    row = {**base, "view": vname, "n": len(units), "n_subjects": units["subject_id"].nunique()}
                    why = check_size(units, task)
                    if why:
                        rows.append({**row, "status": "skipped", "reason": why})
                        continue
                    try:
                        res = run_probe(xv, units["y"].to_numpy(), units["subject_id"].to_numpy(), task.kind,
                                        n_splits=n_splits, seed=seed, n_boot=n_boot)
                    except ValueError as exc:  # e.g. a fold without a class: this probe fails, the panel goes on
                        rows.append({**row, "status": "failed", "reason": str(exc).splitlines()[0]})
                        continue
                    rows.append({**row, "status": "ok", "reason": "", **_metric_cols(res)})
                    preds.append(_prediction_frame(res, units, base, vname))
    table = pd.DataFrame(rows)
    pred = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame(
        columns=["encoder", "task", "kind", "feature", "view", "unit", "subject_id", "y_true", "y_pred", "classes"])
    return table, pred


def _metric_cols(res: ProbeResult) -> dict:
    out = {}
    for m, v in res.metrics.items():
        lo, hi = res.ci.get(m, (np.nan, np.nan))
        out.update({m: v, f"{m}_lo": lo, f"{m}_hi": hi})
    return out


def _prediction_frame(res: ProbeResult, units: pd.DataFrame, base: dict, view: str) -> pd.DataFrame:
    y_pred = [list(map(float, r)) for r in res.y_pred] if res.kind == "classification" else [
        [float(v)] for v in res.y_pred]
    return pd.DataFrame({**{k: [v] * len(units) for k, v in base.items()}, "view": view,
                         "unit": units["unit"].astype(str).to_numpy(), "subject_id": res.groups,
                         "y_true": res.y_true.astype(str), "y_pred": y_pred, "classes": "|".join(res.classes)})


def load_embeddings(paths: list[str | Path], features: tuple[str, ...] = ("cls", "mean", "grid")) -> dict:
    """Concatenate per-cohort ``.npz`` files (scan_id, cls, mean, grid) -> {feature: {scan_id, x}}."""
    parts: dict[str, list] = {f: [] for f in features}
    ids: list = []
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            if "scan_id" not in z:
                raise ValueError(f"{p}: embeddings file lacks 'scan_id'")
            ids.append(z["scan_id"].astype(str))
            if not any(f in z for f in features):
                raise ValueError(f"{p}: embeddings file has none of {list(features)}")
            for f in features:
                if f not in z:
                    continue  # e.g. CNN encoders have no CLS token
                parts[f].append(np.asarray(z[f], np.float64).reshape(len(z["scan_id"]), -1))
    scan_id = np.concatenate(ids) if ids else np.array([], str)
    return {f: {"scan_id": scan_id, "x": np.concatenate(parts[f])} for f in features if parts[f]}
