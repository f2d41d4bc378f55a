"""The output tree under ``results/`` (BIDS-derivatives-like). One place for every path.

results/
  phantom/                                           ground truth written by `braing3n phantom` lives with the raw data
  preprocessed/{cohort}/sub-{subject}/ses-{session}/anat/
      sub-{subject}_ses-{session}_{modality}_qc.json  scan record (status ok|failed, outputs, QC numbers)
      sub-{subject}_ses-{session}_session.json       session record: the session's scan records and statuses
      sub-..._space-SRI24_{modality}.nii.gz           atlas-space volume, negatives clipped
      sub-..._space-SRI24_desc-brain_mask.nii.gz      brain mask in atlas space
  qc/{cohort}_qc.parquet|csv                          per-cohort QC table with outlier flags
  metadata/cohort={cohort}/part-0.parquet             harmonised metadata, partitioned by cohort
  metadata/manifest.parquet, pairs.parquet           training manifest, longitudinal pairs
  store/{cohort}/                                     160x192x160 model-input store
  models/{name}/                                      checkpoints, final weights (safetensors), metrics
  embeddings/, samples/, tables/, figures/, report/
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SESSION_RECORD_SUFFIX = "_session.json"


# generate.* keys naming a model trained elsewhere, by the model folder they replace
EXTERNAL_MODEL_KEYS = {"dit": "model_dir", "dit_long": "long_model_dir", "decoder": "tokenizer_dir"}


def model_dir_for(config: dict, name: str) -> str:
    """The folder of model ``name`` (dit, dit_long, decoder) that sampling, export, reconstruction
    and evaluation read, as the workflow's rules declare it: ``generate.model_dir`` /
    ``long_model_dir`` / ``tokenizer_dir`` when set, else ``{results}/models/{name}``."""
    external = (config.get("generate") or {}).get(EXTERNAL_MODEL_KEYS[name])
    return external or Layout(config.get("results", "results")).model_dir(name)


def scan_record_name(subject: str, session: str, modality: str) -> str:
    """File name of a scan record; it sits in the scan's folder, beside its session record."""
    return f"sub-{subject}_ses-{session}_{modality}_qc.json"


@dataclass(frozen=True)
class Layout:
    root: str = "results"

    def scan_dir(self, cohort: str, subject: str, session: str) -> str:
        return f"{self.root}/preprocessed/{cohort}/sub-{subject}/ses-{session}/anat"

    def scan_record(self, cohort: str, subject: str, session: str, modality: str) -> str:
        return f"{self.scan_dir(cohort, subject, session)}/{scan_record_name(subject, session, modality)}"

    def session_record(self, cohort: str, subject: str, session: str) -> str:
        return f"{self.scan_dir(cohort, subject, session)}/sub-{subject}_ses-{session}{SESSION_RECORD_SUFFIX}"

    def qc_table(self, cohort: str) -> str:
        return f"{self.root}/qc/{cohort}_qc.parquet"

    def metadata_partition(self, cohort: str) -> str:
        return f"{self.root}/metadata/cohort={cohort}/part-0.parquet"

    @property
    def manifest(self) -> str:
        return f"{self.root}/metadata/manifest.parquet"

    @property
    def pairs(self) -> str:
        return f"{self.root}/metadata/pairs.parquet"

    def store_index(self, cohort: str) -> str:
        return f"{self.root}/store/{cohort}/index.parquet"

    def model_dir(self, name: str) -> str:
        return f"{self.root}/models/{name}"

    def table(self, name: str) -> str:
        return f"{self.root}/tables/{name}.csv"

    def figure(self, name: str) -> str:
        return f"{self.root}/figures/{name}.png"

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)
