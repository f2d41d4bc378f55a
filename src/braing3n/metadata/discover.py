"""Find a cohort's raw scans from the path pattern in its mapping YAML.

A bare ``mapping:`` name (``bids``) is a shipped ``config/cohorts/<name>.yaml``; ``scans.layout:
bids`` reads any BIDS raw dataset (see ``braing3n.metadata.bids``). The pattern names fields in braces, e.g.
``sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_{modality}.nii.gz``.
A field may repeat (it must then match the same text). ``scans.modalities`` maps the
file's modality token to the canonical one (T1, T2, FLAIR, T1c); files whose token is
not listed are ignored. The Snakefile calls this at parse time, so it only lists files.
``*`` in a pattern matches one path component that is not recorded (e.g. an ABIDE site
folder), and ``pattern`` may be a list of patterns (e.g. IXI's ``-T1`` and ``_T1`` spellings).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

FIELDS = ("subject", "session", "modality")
MODALITIES = ("T1", "T2", "FLAIR", "T1c")


@dataclass(frozen=True)
class ScanRef:
    """One raw scan as found on disk; ``subject``/``session`` are wildcard-safe labels."""

    cohort: str
    subject: str
    session: str
    modality: str
    path: str
    subject_raw: str
    session_raw: str

    @property
    def scan_id(self) -> str:
        """Globally unique scan key shared by metadata, QC, store and embeddings."""
        return scan_id(self.cohort, self.subject, self.session, self.modality)

    @property
    def subject_id(self) -> str:
        """Globally unique subject key (cohort-scoped), used for splits and grouped folds."""
        return f"{self.cohort}:{self.subject_raw}"


def scan_id(cohort: str, subject: str, session: str, modality: str) -> str:
    return f"{cohort}_sub-{subject}_ses-{session}_{modality}"


def bids_label(text: str) -> str:
    """Alphanumeric label used in file names and Snakemake wildcards (BIDS style)."""
    label = re.sub(r"[^A-Za-z0-9]", "", str(text))
    if not label:
        raise ValueError(f"cannot make a file label from {text!r}: it has no letters or digits")
    return label


SHIPPED_MAPPINGS = Path(__file__).resolve().parents[3] / "config" / "cohorts"


def mapping_path(name: str | os.PathLike) -> str:
    """A cohort's ``mapping:`` as a file: a path as given, or a bare name (``bids``, ``ixi``) =
    ``config/cohorts/<name>.yaml`` under the working directory, else the one shipped in this
    checkout. A missing one raises ValueError listing the shipped names."""
    text = str(name)
    if os.path.isfile(text) or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        return text
    for folder in (Path("config/cohorts"), SHIPPED_MAPPINGS):
        if (folder / f"{text}.yaml").is_file():
            return str(folder / f"{text}.yaml")
    shipped = ", ".join(sorted(p.stem for p in SHIPPED_MAPPINGS.glob("*.yaml")))
    raise ValueError(f"cohort mapping {text!r} is neither a file nor a shipped mapping name ({shipped})")


def load_mapping(path: str | os.PathLike) -> dict:
    path = mapping_path(path)
    with open(path) as fh:
        mapping = yaml.safe_load(fh)
    if not isinstance(mapping, dict) or not isinstance(mapping.get("scans"), dict):
        raise ValueError(f"{path}: cohort mapping must be a mapping with a 'scans' section")
    layout = mapping["scans"].get("layout", "pattern")
    if layout not in ("pattern", "bids"):
        raise ValueError(f"{path}: scans.layout must be 'pattern' or 'bids', got {layout!r}")
    if layout == "pattern" and "pattern" not in mapping["scans"]:
        raise ValueError(f"{path}: scans needs a 'pattern' (or layout: bids)")
    from braing3n.preprocess.declared import declared_inputs

    declared_inputs(mapping["scans"], str(path))  # skull_stripped / space: checked before any job
    return mapping


def is_bids(mapping: dict) -> bool:
    return mapping["scans"].get("layout") == "bids"


def _literal(text: str) -> str:
    return "[^/]*".join(re.escape(part) for part in text.split("*"))


def pattern_to_regex(pattern: str, modalities: list[str] | None = None) -> re.Pattern:
    """Regex for a path pattern; with ``modalities`` the modality field only matches those tokens
    (so ``{subject}-{modality}`` splits ``IXI002-Guys-0828-T1`` at the right dash)."""
    out, seen, pos = [], set(), 0
    for m in re.finditer(r"\{(\w+)\}", pattern):
        out.append(_literal(pattern[pos : m.start()]))
        field = m.group(1)
        if field not in FIELDS:
            raise ValueError(f"path pattern {pattern!r}: unknown field {{{field}}} (allowed: {', '.join(FIELDS)})")
        body = "[^/]+?"
        if field == "modality" and modalities:
            body = "|".join(re.escape(t) for t in sorted(modalities, key=len, reverse=True))
        out.append(f"(?P={field})" if field in seen else f"(?P<{field}>{body})")
        seen.add(field)
        pos = m.end()
    out.append(_literal(pattern[pos:]))
    if "subject" not in seen or "modality" not in seen:
        raise ValueError(f"path pattern {pattern!r} must contain {{subject}} and {{modality}}")
    return re.compile("^" + "".join(out) + "$")


def _candidates(root: Path, patterns: list[str], modality_map: dict) -> list[tuple[str, re.Match]]:
    out, seen = [], set()
    for pattern in patterns:
        regex = pattern_to_regex(pattern, list(modality_map))
        for path in sorted(glob.glob(str(root / re.sub(r"\{\w+\}", "*", pattern)), recursive=False)):
            m = regex.match(Path(path).relative_to(root).as_posix())
            if m and m.group("modality") in modality_map and path not in seen:
                seen.add(path)
                out.append((path, m))
    return out


def _bids_candidates(root: Path, spec: dict, skipped: list | None) -> list[tuple[str, dict]]:
    from braing3n.metadata.bids import discover

    return [(path, {"subject": sub, "session": ses or None, "modality": mod})
            for sub, ses, mod, path in discover(root, spec.get("prefer"), skipped)]


def discover_scans(cohort: str, mapping: dict, root: str | os.PathLike,
                   duplicates: list[tuple[ScanRef, ScanRef]] | None = None,
                   skipped: list[tuple[str, str]] | None = None) -> list[ScanRef]:
    """All scans under ``root`` matching the mapping's pattern, sorted by subject/session/modality.

    Two files with the same subject/session/modality labels raise ValueError, and so do two raw
    subject spellings that give one label ("127_S_0600" and "127S0600": one output folder, and the
    splits would see two subjects), unless a ``duplicates`` list is given: then the first file
    (path order) or the first spelling (path order: stable as files are added, unless a new
    spelling sorts first) is kept and each (kept, extra) pair is appended to it, so the caller
    can report the extra file.

    ``scans.layout: bids`` reads a BIDS tree instead (``braing3n.metadata.bids``): one scan per
    modality and session; every other NIfTI of an anat folder is appended to ``skipped`` as
    (path, reason) when that list is given.
    """
    spec = mapping["scans"]
    session_default = str(spec.get("session_default", "01"))
    root = Path(root)
    if is_bids(mapping):
        candidates = _bids_candidates(root, spec, skipped)
        modality_map = {m: m for m in MODALITIES}
    else:
        patterns = spec["pattern"] if isinstance(spec["pattern"], list) else [spec["pattern"]]
        modality_map = {str(k): str(v) for k, v in spec.get("modalities", {m: m for m in MODALITIES}).items()}
        candidates = [(path, m.groupdict()) for path, m in _candidates(root, patterns, modality_map)]
    found: dict[tuple[str, str, str], ScanRef] = {}
    refs = []
    for path, fields in candidates:
        subject_raw = fields["subject"]
        session_raw = fields.get("session") or session_default
        refs.append(ScanRef(
            cohort=cohort,
            subject=bids_label(subject_raw),
            session=bids_label(session_raw),
            modality=modality_map[fields["modality"]],
            path=str(path),
            subject_raw=subject_raw,
            session_raw=session_raw,
        ))
    first_of_subject: dict[str, ScanRef] = {}
    for ref in refs:
        first = first_of_subject.setdefault(ref.subject, ref)
        if first.subject_raw != ref.subject_raw:
            if duplicates is None:
                raise ValueError(f"{root}: subjects {first.subject_raw!r} and {ref.subject_raw!r} both give the "
                                 f"label {ref.subject}: rename one ({ref.path})")
            duplicates.append((first, ref))
            continue
        key = (ref.subject, ref.session, ref.modality)
        if key in found and duplicates is not None:
            duplicates.append((found[key], ref))
            continue
        if key in found:
            raise ValueError(
                f"{root}: two files for subject {ref.subject} session {ref.session} {ref.modality}: "
                f"{found[key].path} and {ref.path}"
            )
        found[key] = ref
    return sorted(found.values(), key=lambda r: (r.subject, r.session, MODALITIES.index(r.modality)))
