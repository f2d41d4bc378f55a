"""The output tree under ``results/``. One place for every path, and for the BIDS names of the
preprocessed products (`product_names`; the modality -> BIDS suffix mapping is `BIDS_SUFFIX`).

results/
  phantom/                                           ground truth written by `braing3n phantom` lives with the raw data
  preprocessed/{cohort}/                             one BIDS-derivatives dataset per cohort:
      dataset_description.json, .bidsignore, *.json  written by `braing3n derivatives` (top-level sidecars)
      sub-{subject}/ses-{session}/anat/
      sub-{subject}_ses-{session}_{modality}_qc.json  scan record (status ok|failed, outputs, QC numbers)
      sub-{subject}_ses-{session}_session.json       session record: the session's scan records and statuses
      sub-..._[ce-gadolinium_]space-SRI24_{T1w|T2w|FLAIR}.nii.gz   atlas-space volume, negatives clipped
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
ATLAS_SPACE = "SRI24"

# The one mapping between the pipeline's modality names (T1, T2, FLAIR, T1c: used everywhere else)
# and BIDS: the suffix of a modality's files, and the `ce-` label of a contrast-enhanced one. Output
# names are built from it here; metadata/bids.py reads a BIDS cohort's inputs through it.
BIDS_SUFFIX = {"T1": "T1w", "T2": "T2w", "FLAIR": "FLAIR", "T1c": "T1w"}
BIDS_CE = {"T1c": "gadolinium"}


def bids_prefix(subject: str, session: str, modality: str | None = None) -> str:
    """``sub-S_ses-T`` and, for a contrast-enhanced modality, its ``_ce-<label>`` (entity order: ce
    comes before space/desc/from)."""
    ce = BIDS_CE.get(modality or "")
    return f"sub-{subject}_ses-{session}" + (f"_ce-{ce}" if ce else "")


def modality_label(modality: str) -> str:
    """The modality as one BIDS label (from-<label> of a transform): T1w, T2w, FLAIR, T1wCEgadolinium."""
    ce = BIDS_CE.get(modality)
    return BIDS_SUFFIX[modality] + (f"CE{ce}" if ce else "")


def product_names(subject: str, session: str, modality: str) -> dict[str, str]:
    """File names (in the scan's folder) of one scan's products, valid BIDS-derivatives names:
    atlas-space volume, QC picture, transform; for the T1 also the atlas-space and native brain masks
    and the native N4 head. The QC picture (like the scan record and crash file) keeps the internal
    modality name and is listed in the dataset's .bidsignore, as are the transforms (BIDS has no
    transform files yet)."""
    ses, pre, suffix = f"sub-{subject}_ses-{session}", bids_prefix(subject, session, modality), BIDS_SUFFIX[modality]
    names = {"volume": f"{pre}_space-{ATLAS_SPACE}_{suffix}.nii.gz", "png": f"{ses}_{modality}_qc.png"}
    if modality == "T1":
        names.update(brain_mask=f"{ses}_space-{ATLAS_SPACE}_desc-brain_mask.nii.gz",
                     xfm=f"{ses}_from-T1w_to-{ATLAS_SPACE}_mode-image_xfm.mat",
                     native_n4=f"{ses}_desc-n4_T1w.nii.gz",
                     native_brain_mask=f"{ses}_desc-brain_mask.nii.gz")
    else:
        names.update(xfm=f"{ses}_from-{modality_label(modality)}_to-T1w_mode-image_xfm.mat")
    return names


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
        return f"{self.derivatives_root(cohort)}/sub-{subject}/ses-{session}/anat"

    def scan_record(self, cohort: str, subject: str, session: str, modality: str) -> str:
        return f"{self.scan_dir(cohort, subject, session)}/{scan_record_name(subject, session, modality)}"

    def atlas_volume(self, cohort: str, subject: str, session: str, modality: str) -> str:
        return f"{self.scan_dir(cohort, subject, session)}/{product_names(subject, session, modality)['volume']}"

    def derivatives_root(self, cohort: str) -> str:
        """The cohort's BIDS-derivatives dataset (dataset_description.json at its top)."""
        return f"{self.root}/preprocessed/{cohort}"

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
