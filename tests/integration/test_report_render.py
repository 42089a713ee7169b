"""report.html as a browser shows it: headless Chromium screenshots the page and the pixels show the plots and badges.

Needs a Chromium binary; skipped without one. No pip package ships a usable one offline, Debian does:
``apt-get install -y --no-install-recommends chromium-headless-shell`` (or point UNFORGET_CHROMIUM at a binary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.synthetic_emt_run import make_run
from unforget.studies.emt import write_emt_report

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell")
PLOT_BLUE = (0x1F, 0x77, 0xB4)  # the first series colour of every line plot (plots.PALETTE[0])
HELD_GREEN = (0x1A, 0x7F, 0x37)  # the "held" badge (html.CSS)


def find_chromium() -> str | None:
    explicit = os.environ.get("UNFORGET_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def screenshot(chromium: str, page: Path, out: Path, width: int = 1280, height: int = 6000) -> np.ndarray:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.is_file(), f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    return np.asarray(Image.open(out).convert("RGB"))


def pixels_near(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 6) -> int:
    return int((np.abs(image.astype(int) - np.array(colour)).max(-1) <= tolerance).sum())


@pytest.mark.skipif(find_chromium() is None, reason="no headless Chromium (apt-get install chromium-headless-shell)")
def test_report_renders_with_plots_and_badges(tmp_path):
    run = make_run(tmp_path / "run")
    files = write_emt_report(run)
    image = screenshot(find_chromium(), files.html, tmp_path / "page.png")
    assert image.shape == (6000, 1280, 3)
    # the embedded PNGs were decoded and drawn: the plots' first series colour is nowhere in the page's own CSS
    assert pixels_near(image, PLOT_BLUE) > 500
    # the claim badges are styled (4 claims hold in this run folder)
    assert pixels_near(image, HELD_GREEN) > 4 * 200
    # and the page is not one flat colour behind them
    assert len(np.unique(image.reshape(-1, 3)[::97], axis=0)) > 50
