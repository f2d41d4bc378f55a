import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BRAING3N_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real public scans); tests needing it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-scan folder {SHARED_DATA} is absent (only on the project's dev machines)")
    return SHARED_DATA
