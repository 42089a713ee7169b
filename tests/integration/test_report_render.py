"""report.html as a browser shows it: headless Chromium opens the report of every run kind at 1400 px.

Per page: no image that failed to decode, no script or console error, nothing wider than the page (a wide table
scrolls inside its own box), every figure non-blank (many distinct colours when drawn on a canvas), and on the
EMT page the plots' first series colour and the claim badges in the screenshot's pixels.

Chromium: Debian's ``chromium`` (.ci/run installs it with apt-get when /usr/bin/chromium is missing), or
UNFORGET_CHROMIUM pointing at a binary. Without one the test is skipped on a workstation and fails under CI=true,
so CI never passes without having looked. UNFORGET_SCREENS=DIR keeps a full-page screenshot of each kind there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.report_folders import KINDS, every_kind
from unforget.studies.report import write_run_report

CANDIDATES = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "headless_shell")
PLOT_BLUE = (0x1F, 0x77, 0xB4)  # the first series colour of every line plot (plots.PALETTE[0])
HELD_GREEN = (0x1A, 0x7F, 0x37)  # the "held" badge (html.CSS)
WIDTH = 1400

# injected first in <head>: records errors, then on load measures the page and writes the result into the DOM,
# where --dump-dom reads it
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(e.message ? 'error: ' + e.message
    : (e.target && e.target.tagName) + ' failed to load'), true);
for (const level of ['error', 'warn']) {
  const original = console[level];
  console[level] = (...args) => { window.__errors.push('console.' + level + ': ' + args.join(' '));
                                  original.apply(console, args); };
}
window.addEventListener('load', () => {
  const out = {errors: window.__errors, viewport: window.innerWidth,
               page_width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
               images: [], wide: []};
  for (const img of document.images) {
    const box = img.getBoundingClientRect();
    let colours = 0;
    if (img.complete && img.naturalWidth) {
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      const seen = new Set();
      for (let i = 0; i < data.length; i += 4 * 31) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      colours = seen.size;
    }
    out.images.push({figure: img.parentElement.id, complete: img.complete, natural_width: img.naturalWidth,
                     right: box.right, colours: colours});
  }
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.scroll') && !el.classList.contains('scroll')) continue;  // inside its own scroll box
    const box = el.getBoundingClientRect();
    if (box.right > window.innerWidth + 1) out.wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
                                                         + ' to ' + Math.round(box.right) + ' px');
  }
  const pre = document.createElement('pre');
  pre.id = '__probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    explicit = os.environ.get("UNFORGET_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        message = ("no headless Chromium: apt-get install -y chromium (what .ci/run does), or set UNFORGET_CHROMIUM "
                   "to a binary")
        if in_ci():
            pytest.fail(f"CI=true: the browser check must run, not be skipped; {message}")
        pytest.skip(message)
    return found


def run_chromium(chromium: str, *args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def probe_page(chromium: str, page: Path, tmp: Path) -> dict:
    """The page as the browser laid it out at WIDTH px: what PROBE measured."""
    probed = tmp / f"{page.parent.name}-probed.html"
    probed.write_text(page.read_text().replace("<head>", "<head>\n" + PROBE, 1))
    done = run_chromium(chromium, f"--window-size={WIDTH},1000", "--dump-dom", probed.resolve().as_uri(),
                        profile=tmp / "profile")
    found = re.search(r'<pre id="__probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium did not run the page's probe (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))


def screenshot(chromium: str, page: Path, out: Path, height: int, tmp: Path) -> np.ndarray:
    done = run_chromium(chromium, f"--window-size={WIDTH},{height}", f"--screenshot={out}", page.resolve().as_uri(),
                        profile=tmp / "profile")
    assert out.is_file(), f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    return np.asarray(Image.open(out).convert("RGB"))


def pixels_near(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 6) -> int:
    return int((np.abs(image.astype(int) - np.array(colour)).max(-1) <= tolerance).sum())


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    return {kind: write_run_report(folder)[1].html for kind, folder in every_kind(root).items()}


@pytest.mark.parametrize("kind", KINDS)
def test_report_opens_in_a_browser(chromium, reports, kind, tmp_path):
    page = reports[kind]
    probe = probe_page(chromium, page, tmp_path)
    assert probe["errors"] == []
    assert probe["viewport"] == WIDTH
    assert probe["page_width"] <= WIDTH, f"the page scrolls sideways: {probe['wide'][:5]}"
    assert probe["wide"] == []
    figures = re.findall(r'<figure id="([^"]+)"', page.read_text())
    assert figures, f"the {kind} report has no figure"
    assert [i["figure"] for i in probe["images"]] == figures
    for image in probe["images"]:
        assert image["complete"] and image["natural_width"] > 0, f"{image['figure']}: broken image"
        assert image["right"] <= WIDTH, f"{image['figure']}: wider than the page"
        assert image["colours"] > 20, f"{image['figure']}: blank ({image['colours']} colours)"
    height = min(max(int(probe["height"]), 600), 16000)
    keep = os.environ.get("UNFORGET_SCREENS")
    out = Path(keep) / f"{kind}.png" if keep else tmp_path / f"{kind}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    image = screenshot(chromium, page, out, height, tmp_path)
    assert image.shape == (height, WIDTH, 3)
    assert len(np.unique(image.reshape(-1, 3)[::97], axis=0)) > 50  # not one flat colour
    if kind == "emt":
        # the embedded PNGs were decoded and drawn: the plots' first series colour is nowhere in the page's CSS
        assert pixels_near(image, PLOT_BLUE) > 500
        # the claim badges are styled (4 claims hold in this run folder)
        assert pixels_near(image, HELD_GREEN) > 4 * 200
