"""Reading a run's results tree for the report: its tables, QC tables, figures and model folders.

Only this config's products are read (``of_this_run``): leftovers of an earlier config in the
shared tree (an encoder no longer compared, a removed arm, a disabled cohort) stay on disk but out
of the page. Columns are read defensively: the stages add columns over time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from braing3n.paths import Layout, scan_record_name
from braing3n.provenance import read_table


def of_this_run(config: dict, root: Path, path: Path) -> bool:
    """False for a leftover of an earlier config in the shared results tree."""
    rel = path.relative_to(root).parts
    ev = config.get("evaluate", {})
    if rel[0] == "tables" and path.stem.startswith(("probes_", "probe_predictions_")):
        encoder = path.stem.removeprefix("probe_predictions_").removeprefix("probes_")
        return encoder in {ev.get("reference_encoder", "mae"), "mae", *ev.get("baselines", ["random_vit"])}
    if rel[0] == "samples" and "generate" in config:
        return rel[1] in {*config["generate"].get("arms", {}), "forecast"}
    if rel[0] == "qc" and "cohorts" in config:
        cohort = path.stem.removesuffix("_qc_montage").removesuffix("_qc")
        return cohort in enabled_cohorts(config)
    return True


def enabled_cohorts(config: dict) -> list[str]:
    return sorted(c for c, spec in (config.get("cohorts") or {}).items() if (spec or {}).get("enabled", True))


@dataclass
class Tree:
    config: dict
    root: Path
    _tables: dict = field(default_factory=dict)

    @classmethod
    def of(cls, config: dict) -> Tree:
        return cls(config, Path(config.get("results", "results")))

    @property
    def reference(self) -> str:
        return self.config.get("evaluate", {}).get("reference_encoder", "mae")

    def names(self) -> list[str]:
        """Stems of this run's tables under tables/."""
        return sorted(p.stem for p in (self.root / "tables").glob("*.csv") if of_this_run(self.config, self.root, p))

    def table(self, name: str) -> tuple[pd.DataFrame, dict] | None:
        if name not in self._tables:
            path = self.root / "tables" / f"{name}.csv"
            self._tables[name] = read_table(path) if name in self.names() else None
        return self._tables[name]

    def df(self, name: str) -> pd.DataFrame | None:
        got = self.table(name)
        return got[0] if got is not None else None

    def figure(self, name: str) -> Path | None:
        path = self.root / "figures" / f"{name}.png"
        return path if path.exists() else None

    def qc_tables(self) -> dict[str, tuple[pd.DataFrame, dict]]:
        """cohort -> its QC table (qc/{cohort}_qc.csv), this run's cohorts only."""
        out = {}
        for path in sorted((self.root / "qc").glob("*_qc.csv")):
            if of_this_run(self.config, self.root, path):
                out[path.stem.removesuffix("_qc")] = read_table(path)
        return out

    def montage(self, cohort: str) -> Path | None:
        path = self.root / "qc" / f"{cohort}_qc_montage.png"
        return path if path.exists() else None

    def scan_png(self, row: pd.Series) -> Path | None:
        """The per-scan QC picture the preprocessing wrote beside the scan record, if any."""
        try:
            folder = Layout(str(self.root)).scan_dir(str(row["cohort"]), str(row["subject"]), str(row["session"]))
            name = scan_record_name(str(row["subject"]), str(row["session"]), str(row["modality"]))
        except KeyError:
            return None
        path = Path(folder) / name.replace("_qc.json", "_qc.png")
        return path if path.exists() else None

    def scan_input(self, row: pd.Series) -> Path | None:
        """The raw input a scan record names (``input``), for a failed scan that has no QC picture."""
        try:
            record = Path(Layout(str(self.root)).scan_record(str(row["cohort"]), str(row["subject"]),
                                                             str(row["session"]), str(row["modality"])))
            raw = json.loads(record.read_text()).get("input")
        except (KeyError, OSError, json.JSONDecodeError):
            return None
        return Path(raw) if raw and Path(raw).is_file() else None

    def sample_mosaics(self) -> list[Path]:
        return [p for p in sorted((self.root / "samples").glob("*/mosaic.png"))
                if of_this_run(self.config, self.root, p)]

    def models(self) -> list[dict]:
        """Trained models: name, task, configured steps, last logged step and loss (metrics.csv)."""
        out = []
        for cfg in sorted((self.root / "models").glob("*/config.json")):
            try:
                info = json.loads(cfg.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            row = {"model": cfg.parent.name, "task": info.get("task", ""),
                   "steps": (info.get("train") or {}).get("steps", "")}
            metrics = cfg.parent / "metrics.csv"
            if metrics.exists():
                try:
                    m = pd.read_csv(metrics)
                except (OSError, ValueError, pd.errors.EmptyDataError):
                    m = pd.DataFrame()
                if len(m) and "loss" in m:
                    row["final_loss"] = float(m["loss"].iloc[-1])
            out.append(row)
        return out

    def manifest(self) -> pd.DataFrame | None:
        path = Path(Layout(str(self.root)).manifest)
        return pd.read_parquet(path) if path.exists() else None

    def provenances(self) -> list[dict]:
        """Provenance footers of every table of this run (tables/ and qc/)."""
        provs = [self.table(n)[1] for n in self.names()]
        return provs + [prov for _, prov in self.qc_tables().values()]

    def wall_span_s(self) -> float | None:
        """Seconds from the oldest log file to the newest table (file times; no clock is read)."""
        logs = [p.stat().st_mtime for p in (self.root / "logs").rglob("*") if p.is_file()]
        tables = [(self.root / "tables" / f"{n}.csv").stat().st_mtime for n in self.names()]
        if not logs or not tables:
            return None
        return max(0.0, max(tables) - min(logs))
