"""The demo report is self-contained: images copied beside it, linked relatively, and they load.

The render test opens the report in real headless Chromium (Debian's ``chromium``) from a copy of
the report folder (the original deleted), and reads back, for every ``<img>``, whether the browser
decoded it. It skips, saying so, when no Chromium is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from rlops_demo.load import EpisodeRecord, LoadStats, RequestRecord
from rlops_demo.report import RoundSummary, plot_timeline, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def image_sources(html_text: str) -> list[str]:
    parser = _Images()
    parser.feed(html_text)
    return parser.srcs


def _png(path: Path, color: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2))
    ax.plot([0, 1, 2], [0, 1, 4], color=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.as_uri()


def _stats() -> LoadStats:
    stats = LoadStats()
    for i in range(200):
        stats.requests.append(RequestRecord(i * 0.05, 0.002 + (i % 7) * 0.001, ok=i % 50 != 0))
    stats.episodes.append(EpisodeRecord(9.0, 10.0, True))
    stats.live_checkpoints += [(0.1, "/s/round-1/ckpt_1"), (6.0, "/s/round-2/ckpt_4")]
    return stats


def make_report(tmp_path: Path) -> Path:
    """A report as the demo writes it: curves in a storage folder elsewhere, timeline in the run folder."""
    storage = tmp_path / "storage"
    rounds = [
        RoundSummary(
            "round-1", f"{storage}/round-1/ckpt_1", 2.5, True, 10.0, _png(storage / "r1.png", "red")
        ),
        RoundSummary(
            "round-2", f"{storage}/round-2/ckpt_4", 9.4, True, 30.0, _png(storage / "r2.png", "blue")
        ),
    ]
    run = tmp_path / "run"
    timeline = plot_timeline(_stats(), {"pointer written": 5.0, "live": 6.0}, run / "images" / "rollout.png")
    summary = {"rounds": [r.__dict__ for r in rounds], "requests_failed": 4}
    report = write_html(summary, rounds, timeline, run / "report.html")
    shutil.rmtree(storage)  # the report must not need the storage any more
    return report


def test_report_links_only_relative_images_that_exist(tmp_path: Path) -> None:
    report = make_report(tmp_path)
    srcs = image_sources(report.read_text())
    assert len(srcs) == 3, srcs  # the rollout timeline and two training curves
    for src in srcs:
        parsed = urlparse(src)
        assert not parsed.scheme and not parsed.netloc and not src.startswith("/"), src
        assert ".." not in Path(src).parts, src
        assert (report.parent / src).is_file(), src
    assert str(tmp_path) not in report.read_text().split("<h2>Rollout</h2>")[1].split("<h2>Summary")[0]


def test_unreadable_curves_are_said_not_shown_as_broken_images(tmp_path: Path) -> None:
    run = tmp_path / "run"
    timeline = plot_timeline(_stats(), {"live": 6.0}, run / "images" / "rollout.png")
    rounds = [RoundSummary("round-1", "/x/ckpt", 1.0, True, 1.0, (tmp_path / "gone.png").as_uri())]
    report = write_html({}, rounds, timeline, run / "report.html")
    text = report.read_text()
    assert image_sources(text) == ["images/rollout.png"]
    assert "could not read" in text and "gone.png" in text


def _render(report: Path, screenshot: Path | None = None) -> str:
    """The DOM Chromium built, after the load event, with a probe that records each image's state."""
    probe = report.with_name("probe.html")
    probe_script = (
        "<script>window.addEventListener('load', () => {"
        "const r = [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
        "const p = document.createElement('pre'); p.id = 'probe'; p.textContent = JSON.stringify(r);"
        "document.body.appendChild(p);});</script>"
    )
    probe.write_text(report.read_text().replace("</body>", probe_script + "</body>"))
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    base += ["--virtual-time-budget=5000", "--user-data-dir=" + str(report.parent / ".chromium")]
    dom = subprocess.run(
        [*base, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    if screenshot is not None:
        subprocess.run(
            [*base, f"--screenshot={screenshot}", "--window-size=1100,2600", report.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
    probe.unlink()
    return dom


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_report_renders_in_chromium_with_every_image_loaded_after_the_folder_is_moved(tmp_path: Path) -> None:
    report = make_report(tmp_path / "made")
    moved = tmp_path / "copied-elsewhere"
    shutil.copytree(report.parent, moved)
    shutil.rmtree(report.parent)
    shot = tmp_path / "report.png"
    dom = _render(moved / "report.html", screenshot=shot)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S)
    assert found, f"Chromium did not run the probe; DOM starts: {dom[:300]}"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == 3
    for src, complete, width in images:
        assert complete and width > 0, f"image {src} did not load (complete={complete}, width={width})"
    assert shot.stat().st_size > 10_000  # a real page, not a blank one


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_the_probe_sees_a_broken_image(tmp_path: Path) -> None:
    """The render check can fail: a removed image is reported as not loaded."""
    report = make_report(tmp_path)
    (report.parent / "images" / "rollout.png").unlink()
    dom = _render(report)
    images = json.loads(
        re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S).group(1).replace("&quot;", '"')
    )
    broken = [src for src, complete, width in images if not width]
    assert broken == ["images/rollout.png"]
