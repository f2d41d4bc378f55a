"""The BIDS validator for tests: the schema validator (BIDS 1.9, the one that knows derivatives)
that the npm package `bids-validator` 1.15 ships bundled, run under Deno (npm package `deno`):

    npm install --prefix DIR bids-validator@1.15.0 deno     (~3 min, ~800 MB)
    export BIDS_VALIDATOR_DIR=DIR

Both are looked up under $BIDS_VALIDATOR_DIR/node_modules, then `npm root -g`. It runs offline
(the schema is in the bundle). Tests skip with this text when it is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

BUNDLE = "bids-validator/dist/validator/bids-validator.js"
HOW = ("BIDS validator absent: `npm install --prefix DIR bids-validator@1.15.0 deno` and set "
       "BIDS_VALIDATOR_DIR=DIR (tests/bids_validator.py)")


def _module_dirs() -> list[Path]:
    dirs = [Path(os.environ["BIDS_VALIDATOR_DIR"]) / "node_modules"] if os.environ.get("BIDS_VALIDATOR_DIR") else []
    npm = shutil.which("npm")
    if npm:
        try:
            out = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30)
            dirs += [Path(out.stdout.strip())] if out.returncode == 0 and out.stdout.strip() else []
        except (OSError, subprocess.SubprocessError):
            pass
    return dirs


def command() -> list[str] | None:
    """[deno, run, ..., bundle] or None when either is missing."""
    for d in _module_dirs():
        bundle = d / BUNDLE
        deno = d / ".bin" / "deno" if (d / ".bin" / "deno").exists() else shutil.which("deno")
        if bundle.exists() and deno:
            return [str(deno), "run", "--allow-read", "--allow-env", "--allow-sys", "--allow-write",
                    "--no-prompt", str(bundle)]
    return None


def validate(root: Path, cmd: list[str], tmp: Path) -> tuple[list[dict], list[dict]]:
    """(errors, warnings) of the validator on ``root``, each {code, location, subCode}."""
    env = {**os.environ, "DENO_DIR": str(tmp / "deno"), "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"}
    out = subprocess.run([*cmd, str(root), "--json"], capture_output=True, text=True, timeout=300, env=env)
    try:
        issues = json.loads(out.stdout)["issues"]["issues"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"validator gave no JSON (rc {out.returncode}): {out.stderr[-2000:]}") from exc
    def pick(severity: str) -> list[dict]:
        return [{k: i.get(k) for k in ("code", "location", "subCode")} for i in issues if i.get("severity") == severity]

    return pick("error"), pick("warning")
