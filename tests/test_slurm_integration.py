"""The real-SLURM integration (tests/slurm/run_integration.sh) as seen from `make test`.

CI runs the script itself after `make test` (.ci/run, as root on Debian: it installs and starts a
one-node cluster) and runs a demo-sized chain through `snakemake --profile slurm` (preprocessing to
the report, training under the DDP launcher). Here it only runs when asked, because it takes
minutes on 2 cores; without SLURM it is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "slurm" / "run_integration.sh"


@pytest.mark.slow
def test_slurm_integration():
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM integration skipped: no SLURM on this machine (sinfo not found); CI runs "
                    "`bash tests/slurm/run_integration.sh` as root, which installs and starts a one-node cluster")
    if os.environ.get("BRAING3N_SLURM_INTEGRATION") != "1":
        pytest.skip("SLURM integration skipped: sinfo found, but it takes minutes; run "
                    "`bash tests/slurm/run_integration.sh` or set BRAING3N_SLURM_INTEGRATION=1")
    if os.geteuid() != 0:
        pytest.skip("SLURM integration skipped: tests/slurm/start.sh must run as root")
    res = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    assert "run_integration: OK" in res.stdout
