"""The report in a real browser: Debian's headless Chromium (`apt-get install chromium`; the test
is skipped, saying so, when it is absent) loads the page at 1280 px with every <details> opened,
and a script added to a copy of the page checks that every image decoded (naturalWidth > 0) and
that no element reaches past the viewport (no sideways scrolling). Run on the synthetic tree of
tests/report_tree.py, and on `make demo`'s report when it exists."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_tree import make_tree

from braing3n.report import main

REPO = Path(__file__).resolve().parents[1]
VIEWPORT = 1280
CHECK = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const vw = document.documentElement.clientWidth;
  const wide = [];
  document.querySelectorAll('body *').forEach(e => {
    const r = e.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) {
      wide.push(e.tagName + (e.id ? '#' + e.id : '') + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
    }
  });
  const images = Array.from(document.images).map(
    i => [i.alt, i.naturalWidth, Math.round(i.getBoundingClientRect().width)]);
  const out = document.createElement('pre');
  out.id = 'braing3n-check';
  out.textContent = JSON.stringify({viewport: vw, scroll_width: document.documentElement.scrollWidth,
                                    wide: wide.slice(0, 20), n_wide: wide.length, images: images});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("headless Chromium absent: `apt-get install -y chromium` (Debian) to run the browser check")


def browser_check(page: Path, tmp: Path) -> dict:
    probe = tmp / f"check_{page.parent.name}.html"
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={VIEWPORT},900", "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="braing3n-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"chromium rc={res.returncode}: no check output; stderr: {res.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))


def _assert_readable(got: dict, n_images: int) -> None:
    assert got["viewport"] == VIEWPORT, got["viewport"]
    assert got["n_wide"] == 0 and got["scroll_width"] <= VIEWPORT, got["wide"]
    assert len(got["images"]) == n_images
    broken = [alt for alt, natural, _ in got["images"] if natural <= 0]
    assert not broken, broken
    assert all(0 < shown <= VIEWPORT for _, _, shown in got["images"])


def test_synthetic_report_loads_every_image_and_fits_1280px(tmp_path):
    cfg, root = make_tree(tmp_path)
    out = root / "report" / "index.html"
    assert main(["--configfile", str(cfg), "--out", str(out)]) == 0
    got = browser_check(out, tmp_path)
    _assert_readable(got, out.read_text().count("<img "))
    # the 1600 px wide sample figure is scaled into the column, not cut or scrolled
    samples = [shown for alt, natural, shown in got["images"] if alt.startswith("per arm")]
    assert samples and samples[0] < 1600


def test_demo_report_loads_every_image_and_fits_1280px(tmp_path):
    out = REPO / "results" / "demo" / "report" / "index.html"
    if not out.exists():
        pytest.skip(f"{out} absent: run `make demo` first")
    got = browser_check(out, tmp_path)
    _assert_readable(got, out.read_text().count("<img "))
