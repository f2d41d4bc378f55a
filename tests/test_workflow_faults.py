"""One cohort of good scans and scans of each crashing class, run through Snakemake to the store.

Four IXI sessions (2 mm heads from ../shared/data, IXI mapping):
- IXI132: a good T1 and a T2 of six thick slices (refused before HD-BET; the T1 goes on);
- IXI174: its T1 stored as int16 with a -32768 background (the old code: "registration failed");
- IXI211: its T1 hits an unforeseen exception in N4, injected by a `sitecustomize` on the jobs'
  PYTHONPATH (the old code: the session job died with a traceback, so the cohort's QC table and
  store never ran);
- IXI213: a near-constant image (the old code: Otsu IndexError).
The QC table must be built and list each failure with its reason (and the crash file), and the two
good T1s must reach the store.
"""

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CRASH_SLICES = 87  # the injected fault fires on a scan with this many voxels on some axis

INJECT = f'''
"""Test-only fault injection: N4 raises on scans with {CRASH_SLICES} voxels on an axis."""
import importlib.abc
import importlib.machinery
import sys


class _Inject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "braing3n.preprocess.n4":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            real = module.n4

            def n4(img, *a, **k):
                with module.stage("n4"):
                    if {CRASH_SLICES} in img.shape:
                        raise IndexError("injected fault: list index out of range")
                    return real(img, *a, **k)

            module.n4 = n4

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Inject())
'''


def _ixi(shared_data: Path, name: str) -> nib.Nifti1Image:
    return nib.load(str(shared_data / "ixi-t1-2mm" / f"{name}_T1.nii.gz"))


def build_cohort(shared_data: Path, root: Path) -> None:
    root.mkdir(parents=True)
    good = _ixi(shared_data, "IXI132-HH-1415")
    nib.save(good, str(root / "IXI132-HH-1415_T1.nii.gz"))
    thick = np.asanyarray(good.dataobj)[:, :, 40:46].astype(np.float32)
    nib.save(nib.Nifti1Image(thick, good.affine @ np.diag([1, 1, 3.0, 1])), str(root / "IXI132-HH-1415_T2.nii.gz"))
    img = _ixi(shared_data, "IXI174-HH-1571")
    d = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.where(d == 0, -32768, np.round(d)).astype(np.int16), img.affine),
             str(root / "IXI174-HH-1571_T1.nii.gz"))
    img = _ixi(shared_data, "IXI211-HH-1568")
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, :CRASH_SLICES].astype(np.float32), img.affine),
             str(root / "IXI211-HH-1568_T1.nii.gz"))
    near = np.full((120, 120, 90), 100.0, np.float32)
    near[:3, :4, :] = 0.0
    nib.save(nib.Nifti1Image(near, np.diag([2.0, 2, 2, 1])), str(root / "IXI213-HH-1642_T1.nii.gz"))
    rows = pd.read_csv(shared_data / "ixi-t1-2mm" / "participants.csv")
    keep = ["IXI132-HH-1415", "IXI174-HH-1571", "IXI211-HH-1568", "IXI213-HH-1642"]
    rows[rows["MRID"].isin(keep)].to_csv(root / "participants.csv", index=False)


def test_cohort_with_crashing_scans_reaches_qc_table_and_store(shared_data, tmp_path):
    build_cohort(shared_data, tmp_path / "raw")
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    results = tmp_path / "results"
    config = {"results": str(results), "seed": 0, "device": "cpu",
              "cohorts": {"faulty": {"mapping": str(REPO / "config" / "cohorts" / "ixi.yaml"),
                                     "root": str(tmp_path / "raw")}},
              "preprocess": {"threads": 1, "hdbet": {"mode": "fast", "device": "cpu"}},
              "metadata": {"strict": False}, "store": {"workers": 1}}
    cfg = tmp_path / "faulty.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = dict(os.environ, PYTHONPATH=f"{inject}:{REPO / 'src'}",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    store = results / "store" / "faulty" / "index.parquet"
    out = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(REPO), "--configfile", str(cfg),
                          "--cores", "2", str(store)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    qc = pd.read_parquet(results / "qc" / "faulty_qc.parquet").set_index("scan_id")
    ids = {f"faulty_sub-{s}_ses-01_{m}": st for s, m, st in [
        ("IXI132HH1415", "T1", "ok"), ("IXI132HH1415", "T2", "failed"), ("IXI174HH1571", "T1", "ok"),
        ("IXI211HH1568", "T1", "failed"), ("IXI213HH1642", "T1", "failed")]}
    assert qc["status"].to_dict() == ids
    reasons = {k.split("_sub-")[1]: r for k, r in qc["reason"].items()}
    raw = tmp_path / "raw"
    assert reasons[_key(qc, "IXI132", "T2")].startswith(f"{raw}/IXI132-HH-1415_T2.nii.gz: read: field of view")
    crash = _key(qc, "IXI211", "T1")
    assert reasons[crash] == (f"{raw}/IXI211-HH-1568_T1.nii.gz: internal error in n4: IndexError: "
                              "injected fault: list index out of range")
    crash_file = Path(qc.loc[f"faulty_sub-{crash}", "crash_file"])
    assert crash_file.name.endswith("_T1_crash.txt") and "IndexError: injected fault" in crash_file.read_text()
    assert reasons[_key(qc, "IXI213", "T1")].startswith(f"{raw}/IXI213-HH-1642_T1.nii.gz: read: constant image")
    assert qc.loc[qc["status"] == "ok", "brain_volume_ml"].between(900, 1900).all()
    index = pd.read_parquet(store).set_index("scan_id")
    ok = sorted(qc.index[qc["status"] == "ok"])
    assert len(ok) == 2 and sorted(index.index[index["status"] == "ok"]) == ok  # -32768 background included
    assert sorted(p.name for p in store.parent.glob("*.npy")) == [f"{k}.npy" for k in ok]
    assert (index.loc[ok, "n_brain"] > 1_000_000).all()  # 1 mm voxels of a whole brain, stored


def _key(qc: pd.DataFrame, subject_prefix: str, modality: str) -> str:
    (key,) = [k.split("_sub-")[1] for k in qc.index if f"_sub-{subject_prefix}" in k and k.endswith(f"_{modality}")]
    return key
