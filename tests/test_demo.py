"""The README's main job (`make demo` = examples/demo.sh) runs end to end on the bundled demo data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_demo_script_runs_the_whole_flow(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = tmp_path / "demo"
    proc = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh"), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for step in range(1, 10):
        assert f"=== {step}/9 " in proc.stderr
    numbers = dict(re.findall(r"^(validation accuracy|held-out accuracy|shifted mean accuracy)[^:]*:\s+([0-9.]+)$",
                              proc.stdout, flags=re.M))
    assert set(numbers) == {"validation accuracy", "held-out accuracy", "shifted mean accuracy"}, proc.stdout
    details = json.loads((out / "report" / "details.json").read_text())
    assert details["status"] == "ok"
    assert float(numbers["held-out accuracy"]) == round(details["scores"]["accuracy"], 4)
    assert float(numbers["validation accuracy"]) > 0.8  # 8 classes: chance is 0.125
    assert (out / "report" / "report.html").is_file() and (out / "submission.zip").is_file()
