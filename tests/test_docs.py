"""Docs that cannot drift: every recorded output in the walkthroughs is what the program prints today.

examples/transcripts.py runs the commands of each marked block and compares; these tests check that machinery on
real commands, then (slow) run it over every walkthrough.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPT = ROOT / "examples" / "transcripts.py"
_spec = importlib.util.spec_from_file_location("transcripts", SCRIPT)
transcripts = sys.modules.setdefault("transcripts", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(transcripts)

WALKTHROUGHS = [ROOT / "examples" / name / "README.md" for name in ("an2dl-2024", "an2dl-2023", "notebook")]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("recorded, now", [
    ("45/45 - 13s - 291ms/step - accuracy: 0.3535", "45/45 - 4s - 96ms/step - accuracy: 0.3535"),
    ("macro F1 0.9935 (best epoch 6 of 6, 38 s)", "macro F1 0.9935 (best epoch 6 of 6, 112 s)"),
    ("built submission.zip (0.27 MiB, sha256 8c296e7013a6)", "built submission.zip (0.28 MiB, sha256 0123456789ab)"),
    ("images per second                                   261.6", "images per second    70.3"),
    ("images the time limit allows at this rate         156,239", "images the time limit allows at this rate 41,269"),
    ("import model.py                                    2.41 s", "import model.py      11.00 s"),
    ("-------  ------", "--------  -------"),
    (f"built {tempfile.gettempdir()}/tmpab12/s.zip", f"built {tempfile.gettempdir()}/tmpzz_9/s.zip"),
])
def test_volatile_parts_compare_equal(recorded, now):
    assert transcripts.comparable(recorded) == transcripts.comparable(now)


@pytest.mark.parametrize("recorded, now", [
    ("validation accuracy 0.9935, balanced accuracy 0.9936", "validation accuracy 0.9903, balanced accuracy 0.9936"),
    ("kept 2070 of 2400; removed 330", "kept 2071 of 2400; removed 329"),
    ("train 1450 -> split/train.npz", "train 1450 -> split/training.npz"),
    ("[exit 1]", "[exit 3]"),
    ("shifted mean accuracy        94.15%", "shifted mean accuracy        94.25%"),
    ("corrupting 200 images x 11 corruptions x 5 severities", "corrupting 200 images x 11 corruptions x 4 severities"),
    ("ok: preprocessing byte-identical on 5 probe sets", "ok: preprocessing byte-identical on 4 probe sets"),
])
def test_meaningful_changes_still_differ(recorded, now):
    assert transcripts.comparable(recorded) != transcripts.comparable(now)


def test_written_output_drops_machine_noise_but_keeps_the_program_lines(tmp_path):
    raw = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
           "I0000 00:00:1795986112.946145   22178 port.cc:153] oneDNN custom operations are on.\n"
           "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
           "appropriate compiler flags.\n"
           "\rsets:   0%|          | 0/59 [00:00<?, ?set/s]"
           "\rsets: 100%|##########| 59/59 [00:46<00:00, 1.26set/s]\n"
           f"running x.zip ({Path.home()}/.cache/cbtool/python; network blocked)   \n"
           f"report: {tmp_path}/report/report.html\n" + "x" * 400 + "\n")
    assert transcripts.clean_output(raw, tmp_path).splitlines() == [
        "running x.zip (~/.cache/cbtool/python; network blocked)", "report: report/report.html",
        "x" * transcripts.MAX_LINE + " [...]"]


def test_console_blocks_round_trip_with_continued_commands():
    body = "$ cbtool split a.npz \\\n    --val 0.1 -o s\ntrain 9 -> s/train.npz\n$ ls s\ntrain.npz\n"
    steps = transcripts.parse_console(body)
    assert steps == [("cbtool split a.npz \\\n    --val 0.1 -o s", "train 9 -> s/train.npz"), ("ls s", "train.npz")]
    assert transcripts.render_console(steps) == body


def _doc(path: Path, inspect_output: str) -> Path:
    path.write_text(
        "# a walkthrough\n\n<!-- transcript: make -->\n```console\n$ cbtool demo-data -o d.npz --n 300\n```\n"
        "<!-- /transcript -->\n\nSet-up code, run as shown:\n\n<!-- transcript: convert -->\n```python\n"
        "import numpy as np\nd = np.load('d.npz')\n"
        "np.savez('small.npz', images=d['images'][:40], labels=d['labels'][:40])\n"
        "print(f'kept 40 of {len(d[\"images\"])}')\n```\n<!-- /transcript -->\n\nIt prints:\n\n"
        "<!-- transcript: convert-output -->\n```text\n```\n<!-- /transcript -->\n\n"
        "<!-- transcript: look -->\n```console\n$ cbtool inspect small.npz\n"
        f"{inspect_output}$ cbtool inspect missing.npz\n```\n<!-- /transcript -->\n\nThe end.\n")
    return path


def test_check_fails_on_drift_and_write_regenerates_the_blocks(tmp_path):
    doc = _doc(tmp_path / "README.md", "small.npz (an2dl2024 schema)\n")
    checked = _run("--check", str(doc))
    assert checked.returncode == 1 and "+wrote d.npz: 300 images" in checked.stdout, checked.stdout + checked.stderr

    assert _run("--write", str(doc)).returncode == 0
    text = doc.read_text()
    assert "wrote d.npz: 300 images" in text and text.endswith("The end.\n")
    assert "```text\nkept 40 of 300\n```" in text  # what the python block printed
    look = re.search(r"\$ cbtool inspect small\.npz\n(.*?)\$ cbtool inspect missing\.npz\n(.*?)```", text, re.S)
    assert "(40, 96, 96, 3)" in look.group(1)
    assert re.fullmatch(r"\[exit [12]\]", look.group(2).splitlines()[-1]), look.group(2)  # a failure records its code
    assert _run("--check", str(doc)).returncode == 0

    count = re.search(r"   0 Basophil +(\d+)", text)
    doc.write_text(text.replace(count.group(0), count.group(0)[:-len(count.group(1))] + "99"))
    drifted = _run("--check", str(doc))
    assert drifted.returncode == 1
    assert re.search(r"^-0 Basophil 99$", drifted.stdout, re.M) and "1 recorded block(s) differ" in drifted.stdout


def test_a_failing_setup_block_stops_with_exit_2(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("<!-- transcript: broken -->\n```python\nraise SystemExit(4)\n```\n<!-- /transcript -->\n")
    result = _run("--check", str(doc))
    assert result.returncode == 2 and "python block 'broken' exited 4" in result.stderr


@pytest.mark.parametrize("doc", WALKTHROUGHS, ids=lambda p: p.parent.name)
def test_every_recorded_output_in_a_walkthrough_is_generated(doc):
    """An output block outside the markers would be edited by hand again: only code may stand outside them."""
    text = transcripts.BLOCK.sub("", doc.read_text())
    fences = re.findall(r"^```(\w*)$\n.*?^```$", text, re.M | re.S)
    assert transcripts.find_blocks(doc.read_text()), f"{doc}: no recorded block"
    assert set(fences) <= {"bash", "python", "toml"}, f"{doc}: a fenced block outside the transcript markers"


def test_demo_script_runs_the_2024_walkthrough_commands():
    """`make demo` and the recorded 2024 walkthrough run the same cbtool commands, so the README can point there."""
    recorded = {cmd for block in transcripts.find_blocks(WALKTHROUGHS[0].read_text())
                for cmd, _ in transcripts.parse_console(block.body)}
    demo = (ROOT / "examples" / "demo.sh").read_text().replace("\\\n", "")
    commands = [re.sub(r"\s+", " ", line.strip()).replace('"$OUT/', "").replace('"', "")
                for line in demo.splitlines() if line.strip().startswith("cbtool ") and "runtime create" not in line]
    assert len(commands) >= 8
    assert [cmd for cmd in commands if cmd not in recorded] == []


@pytest.mark.slow
def test_walkthroughs_match_the_program():
    """Re-run every walkthrough's commands on the demo data; a differing line fails with the unified diff."""
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import runtime_python

    for profile in ("an2dl-2024", "an2dl-2023"):
        runtime_python(get_profile(profile))  # created once and cached, as `make test` does
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
