"""What a cohort mapping declares about its files: `scans.skull_stripped` and `scans.space`.

    scans:
      pattern: "{subject}/{subject}_{modality}.nii.gz"
      skull_stripped: true          # every modality; or per modality: {T1: true, FLAIR: false}
      space: SRI24                  # SRI24 (on the atlas grid: no registration) or native

A key left out means "detect it from the image" (preprocess/inputs.py). The workflow passes the
declarations to `braing3n preprocess session` as `--skull-stripped T1=yes --space T1=SRI24`.
No heavy imports: the Snakefile reads this at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass

SPACES = ("SRI24", "native")
MODALITIES = ("T1", "T2", "FLAIR", "T1c")


@dataclass(frozen=True)
class Declared:
    """What a cohort mapping says about one modality's files (None: detect from the image)."""

    skull_stripped: bool | None = None
    space: str | None = None


def _flag(value, key: str, where: str, modalities: tuple[str, ...]) -> dict[str, object]:
    """`key: v` (every modality) or `key: {T1: v, FLAIR: v}` -> {modality: v}."""
    per = value if isinstance(value, dict) else {m: value for m in modalities}
    unknown = sorted(set(map(str, per)) - set(modalities))
    if unknown:
        raise ValueError(f"{where}: scans.{key}: unknown modality {unknown[0]!r} (expected {', '.join(modalities)})")
    for m, v in per.items():
        if key == "skull_stripped" and not isinstance(v, bool):
            raise ValueError(f"{where}: scans.{key}.{m}: expected true or false, got {v!r}")
        if key == "space" and v not in SPACES:
            raise ValueError(f"{where}: scans.{key}.{m}: expected one of {', '.join(SPACES)}, got {v!r}")
    return {str(m): v for m, v in per.items()}


def declared_inputs(scans: dict, where: str) -> dict[str, Declared]:
    """A mapping's `scans` section -> {modality: Declared}; bad values raise ValueError naming the key."""
    stripped = _flag(scans.get("skull_stripped", {}), "skull_stripped", where, MODALITIES)
    space = _flag(scans.get("space", {}), "space", where, MODALITIES)
    return {m: Declared(stripped.get(m), space.get(m)) for m in MODALITIES}


def cli_flags(declared: Declared, modality: str | None = None) -> list[str]:
    """`braing3n preprocess` arguments for a declaration (`T1=yes` form when ``modality`` is given)."""
    pre = f"{modality}=" if modality else ""
    out = []
    if declared.skull_stripped is not None:
        out += ["--skull-stripped", pre + ("yes" if declared.skull_stripped else "no")]
    if declared.space is not None:
        out += ["--space", pre + declared.space]
    return out


def parse_cli_flags(stripped: list[str], space: list[str], modalities: list[str]) -> dict[str, Declared]:
    """`--skull-stripped yes|no|auto` or `MODALITY=...` (repeatable), same for `--space SRI24|native|auto`."""
    values: dict[str, dict[str, str]] = {m: {} for m in modalities}
    for key, items, allowed in (("skull_stripped", stripped, ("yes", "no", "auto")),
                                ("space", space, (*SPACES, "auto"))):
        for item in items:
            mod, sep, value = item.rpartition("=")
            targets = [mod] if sep else modalities
            if value not in allowed:
                raise ValueError(f"--{key.replace('_', '-')} {item!r}: expected {'|'.join(allowed)}")
            for m in targets:
                if m not in values:
                    raise ValueError(f"--{key.replace('_', '-')} {item!r}: no {m} scan given")
                values[m][key] = value
    return {m: Declared(skull_stripped={"yes": True, "no": False}.get(v.get("skull_stripped", "auto")),
                        space=None if v.get("space", "auto") == "auto" else v["space"]) for m, v in values.items()}
