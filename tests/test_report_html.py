"""The simulate report: files in the report dir, and the HTML page rendered by headless Chromium.

Chromium is Debian's `chromium` package (tests/setup.sh installs it). The test renders a copy of report.html with
a probe script appended, which records what the browser actually laid out: the page's rendered text (innerText
skips anything hidden), the size of the key elements, and the decoded size of every image.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolkit import simulate_report as report
from toolkit.runtime import shift
from toolkit.runtime.scoring import score
from toolkit.runtime.simulate import SimulateResult

CLASSES = ["Basophil", "Eosinophil", "Erythroblast", "Immature granulocytes", "Lymphocyte", "Monocyte", "Neutrophil", "Platelet"]
PROBE = """
<pre id="cbtool-probe"></pre>
<script>
window.addEventListener("load", () => {
  const out = {text: document.body.innerText, images: [...document.images].map(i => i.naturalWidth), boxes: {}};
  for (const id of ["status", "accuracy", "shift-mean", "failure", "shift-heat", "gradcam", "corruption-strip", "confusion", "per_class-note", "tta-table"]) {
    const el = document.getElementById(id);
    if (el) { const b = el.getBoundingClientRect(); out.boxes[id] = [b.width, b.height, getComputedStyle(el).visibility]; }
  }
  out.heat = [...document.querySelectorAll("#shift-heat td[style]")].map(td => [td.innerText, getComputedStyle(td).backgroundColor]);
  out.statusColor = getComputedStyle(document.getElementById("status")).color;
  document.getElementById("cbtool-probe").textContent = JSON.stringify(out);
});
</script>
"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _heldout(path: Path, n: int = 200, k: int = 8) -> Path:
    """A real held-out npz (random images, labels 0..k-1 as (n, 1)) for the pictures that re-read it."""
    rng = np.random.default_rng(3)
    np.savez(path, images=rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8), labels=(np.arange(n) % k).reshape(-1, 1))
    return path


def _result(status: str = "ok", classes: list[str] = CLASSES, accuracy: float = 0.8, **paths):
    rng = np.random.default_rng(0)
    k = len(classes)
    y = np.arange(200) % k
    pred = np.where(rng.random(200) < accuracy, y, (y + 1 + rng.integers(0, k - 1, 200)) % k)
    scores = score(y, pred, classes)
    table = {name: {s: max(0.0, scores["accuracy"] - 0.04 * s * (i % 4 + 1) / 2) for s in shift.SEVERITIES} for i, name in enumerate(shift.CORRUPTIONS)}
    result = {
        "status": status,
        "failure": None,
        "class_names": classes,
        "inputs": {},
        "seed": 0,
        "submission": "/tmp/sub.zip",
        "data": "/tmp/heldout.npz",
        "chance_level": 1 / k,
        "near_chance": accuracy < 1.5 / k,
        "n_images": 200,
        "profile": {"name": "an2dl-2024"},
        "limits": {"time_limit_s": 600, "memory_limit_mb": 8192, "note": "The memory limit approximates the grader."},
        "scores": {**scores, "input": "uint8"},
        "scores_by_input": {"uint8": scores["accuracy"], "float32": scores["accuracy"]},
        "timing": {"import_s": 2.5, "load_s": 0.75, "clean_predict_s": 4.0, "images_per_s": 100.0, "wall_s": 8.0,
                   "images_within_limit": 59675},
        "peak_memory_mb": 812.0,
        "warnings": ["predictions differ between the uint8 and float32 inputs on 2 images"],
        "shift": {**shift.summarize(scores["accuracy"], table), "images_per_set": 200, "seed": 0},
        "versions": {"cbtool": "0.1.0", "numpy": np.__version__},
    }
    result.update(paths)
    if status == "failed":
        result.update(scores=None, shift=None, failure={"kind": "load_error", "phase": "load", "message": "weights.keras not found <b>",
                                                         "stderr_tail": "Traceback ...\nFileNotFoundError"})  # fmt: skip
    return SimulateResult.from_dict(result)


def _render(page: Path, tmp_path: Path) -> dict:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (tests/setup.sh installs Debian's chromium package); cannot render the HTML report")
    probe_page = page.with_name("probe.html")
    probe_page.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,2000",
           "--dump-dom", probe_page.as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="cbtool-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match and match.group(1), f"chromium did not run the probe (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def test_report_dir_holds_codabench_scores_details_plots_and_one_html(tmp_path):
    result = _result(data=str(_heldout(tmp_path / "heldout.npz")))
    paths = report.write_report(result, tmp_path / "rep")
    rep = tmp_path / "rep"
    assert json.loads((rep / "scores.json").read_text()) == {
        "accuracy": result.scores["accuracy"], "balanced_accuracy": result.scores["balanced_accuracy"],
        "macro_f1": result.scores["macro_f1"], "shift_mean_accuracy": result.shift["mean_accuracy"],
    }  # fmt: skip
    details = json.loads((rep / "details.json").read_text())
    assert details["timing"]["load_s"] == 0.75 and details["versions"]["cbtool"] == "0.1.0" and details["report"] == paths
    for png in ("confusion_matrix.png", "corruption_severity.png", "corruption_strip.png"):
        assert (rep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (rep / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # the confusion matrix and the strip; the heat map is the table
    assert "Grad-CAM skipped: /tmp/sub.zip: no such submission zip" in page
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page), "the page must not load anything from the network"
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in rep.iterdir()} == {0o666 & ~umask}, "report files must not stay mkstemp's 0600"
    assert sorted(p.name for p in rep.iterdir()) == sorted(["scores.json", "details.json", "confusion_matrix.png", "corruption_severity.png",
                                                           "corruption_strip.png", "report.html"])


TTA_COMPARISON = {"modes": {"none": {"clean": 0.97, "shifted": 0.9, "views": 1, "predict_s": 1.5},
                            "flip": {"clean": 0.897, "shifted": 0.88, "views": 2, "predict_s": 3.0},
                            "d4": {"clean": None, "shifted": None, "views": 8, "predict_s": None, "skipped": "killed: out of memory"}},
                  "submission": "flip", "best": "none", "reason": "none: best mean of clean and shifted accuracy"}


def test_html_renders_the_key_numbers_in_chromium(tmp_path):
    result = _result(data=str(_heldout(tmp_path / "heldout.npz")), tta_comparison=TTA_COMPARISON)
    report.write_report(result, tmp_path / "rep")
    seen = _render(tmp_path / "rep" / "report.html", tmp_path)
    text = seen["text"]
    acc = f"{100 * result.scores['accuracy']:.2f}%"
    assert f"accuracy {acc}" in text
    assert f"shifted {100 * result.shift['mean_accuracy']:.2f}%" in text
    assert f"{100 * result.scores['macro_f1']:.2f}%" in text
    assert "OK" in text and "peak memory (MB)\t812" in text and "load the model\t0.75 s" in text
    assert "images the time limit allows at this rate\t59,675" in text
    worst = result.shift["worst_corruption"]
    assert f"worst: {worst}" in text
    assert re.search(rf"{worst}\t" + r"\t".join([r"\d+\.\d\d%"] * 6) + r"\t-\d+\.\d\d points", text), "the corruption row is not laid out"
    drop = result.shift["mean_accuracy"] - result.shift["clean_accuracy"]
    assert f"shifted mean vs clean\t{100 * drop:+.2f} points" in text and "drop" not in text.lower()
    assert "chance level (always the most frequent class)\t12.50%" in text
    assert "Immature granulocytes" in text
    # --compare-tta: the verdict line and one row per mode, the submission's and the best one marked
    assert "TTA: the submission uses flip; none scores better here" in text and "rebuild with --tta none" in text
    assert "none (best)\t1\t97.00%\t90.00%\t1.50 s" in text and "flip (submission)\t2\t89.70%\t88.00%" in text
    assert "d4 not measured: killed: out of memory" in text
    assert seen["images"] and all(width > 300 for width in seen["images"]) and len(seen["images"]) == 2
    for element in ("status", "accuracy", "shift-mean", "shift-heat", "corruption-strip", "per_class-note", "tta-table"):
        width, height, visibility = seen["boxes"][element]
        assert width > 0 and height > 0 and visibility == "visible", element
    # the heat map: 11 families x (5 severities + mean) shaded cells, the worst family redder than the clean-level cells
    assert len(seen["heat"]) == 11 * 6
    colours = {cell: _rgb(colour) for cell, colour in seen["heat"]}
    lowest, highest = min(colours, key=lambda c: float(c[:-1])), max(colours, key=lambda c: float(c[:-1]))
    assert colours[lowest][0] > colours[lowest][1] and colours[highest][1] > colours[highest][0], (lowest, highest, colours)
    assert _rgb(seen["statusColor"])[1] > _rgb(seen["statusColor"])[0]  # a green OK


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def test_near_chance_is_no_green_ok_and_shows_the_chance_level(tmp_path):
    result = _result(accuracy=0.1)
    assert result.near_chance and result.ok
    report.write_report(result, tmp_path / "rep")
    seen = _render(tmp_path / "rep" / "report.html", tmp_path)
    assert "NEAR CHANCE" in seen["text"] and "\nOK" not in seen["text"] and "(chance level 12.50%)" in seen["text"]
    red, green, _ = _rgb(seen["statusColor"])
    assert red > green, seen["statusColor"]  # amber, not the OK green
    assert report.render_text(result).startswith("simulate: NEAR CHANCE")
    assert "near the chance level 12.50%" in report.render_text(result)


def test_gradcam_sheet_and_strip_of_a_cbtool_zip_render_in_chromium(tmp_path):
    from submission_data import shared_export

    from toolkit.runtime.profiles import get_profile
    from toolkit.submission.build import build_submission

    _, export = shared_export()
    zip_path = tmp_path / "sub.zip"
    build_submission(export, zip_path, get_profile("an2dl-2024"))
    classes = ["basophil", "eosinophil", "lymphocyte"]
    result = _result(classes=classes, submission=str(zip_path), data=str(_heldout(tmp_path / "heldout.npz", k=3)))
    paths = report.write_report(result, tmp_path / "rep")
    assert paths["gradcam"].endswith("gradcam.png") and paths["corruption_strip"].endswith("corruption_strip.png")
    seen = _render(tmp_path / "rep" / "report.html", tmp_path)
    for element in ("gradcam", "corruption-strip", "shift-heat"):
        width, height, visibility = seen["boxes"][element]
        assert width > 300 and height > 200 and visibility == "visible", element
    assert "per_class-note" not in seen["boxes"]
    assert "Misclassified held-out images, with Grad-CAM of the predicted class" in seen["text"]


def test_failed_html_shows_the_failure_escaped(tmp_path):
    result = _result("failed")
    paths = report.write_report(result, tmp_path / "rep")
    assert "scores" not in paths  # no scores file, as on Codabench when ingestion crashes
    seen = _render(tmp_path / "rep" / "report.html", tmp_path)
    assert "FAILED" in seen["text"] and "Failure: load_error during load" in seen["text"]
    assert "weights.keras not found <b>" in seen["text"]  # the markup-like text shows as text, not as markup
    assert seen["boxes"]["failure"][1] > 0
