"""The package as users get it: a wheel built from the repo, installed into a fresh venv, builds and checks a submission.

Catches what an editable install hides: files read at run time (templates, arch.py, preprocessing.py, the sandbox child)
that the wheel does not ship. The base dependencies have no TensorFlow; building from an export dir needs none.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

# What a build must not see or leave behind: the dev venv, git, earlier build outputs, caches.
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                     "demo_out", "out")


def _run(*cmd: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH could point back at the repo and hide a file the wheel lacks
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the wheel built from a copy of the repo; returns its bin dir."""
    base = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, base / "src", ignore=_NOT_SOURCE)  # building in place would write build/ into the repo
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", base / "src", cwd=base)
    (wheel,) = (base / "dist").glob("cbtool-*.whl")
    _run(sys.executable, "-m", "venv", base / "venv", cwd=base)
    _run(base / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=base)
    return base / "venv" / "bin"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    from export_data import make_run_dir
    from toolkit.export import export_run

    base = tmp_path_factory.mktemp("export")
    export_run(make_run_dir(base / "run"), base / "export", ["portable"])
    return base / "export"


def test_installed_package_is_the_wheel(installed, tmp_path):
    where = _run(installed / "python", "-c", "import toolkit; print(toolkit.__file__)", cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(installed.parent) and not Path(where).is_relative_to(ROOT), where
    assert "Usage: cbtool" in _run(installed / "cbtool", "--help", cwd=tmp_path).stdout


def test_installed_cbtool_builds_and_checks_a_submission(installed, export_dir, tmp_path):
    cbtool = installed / "cbtool"
    built = _run(cbtool, "build-submission", export_dir, "-o", "sub.zip", "--profile", "an2dl-2024", "--json", cwd=tmp_path)
    assert json.loads(built.stdout)["check"]["ok"] is True
    checked = _run(cbtool, "check", "sub.zip", "--json", cwd=tmp_path)
    assert json.loads(checked.stdout)["ok"] is True
    with zipfile.ZipFile(tmp_path / "sub.zip") as zf:
        tree = ast.parse(zf.read("model.py").decode("utf-8"))
    assert any(isinstance(node, ast.ClassDef) and node.name == "Model" for node in tree.body)


def test_installed_cbtool_builds_an_ensemble_from_its_package_data(installed, export_dir, tmp_path):
    """The ensemble template and toolkit/int8.py's neighbours ship in the wheel: two members build and check."""
    import shutil

    second = shutil.copytree(export_dir, tmp_path / "second")
    built = _run(installed / "cbtool", "build-submission", export_dir, second, "-o", "ens.zip", "--tta", "flip,none",
                 "--json", cwd=tmp_path)
    data = json.loads(built.stdout)
    assert data["check"]["ok"] is True and [m["tta"] for m in data["manifest"]["members"]] == ["flip", "none"]
    with zipfile.ZipFile(tmp_path / "ens.zip") as zf:
        assert {"member1_weights.npz", "member2_weights.npz"} <= set(zf.namelist())
        assert "MEMBERS = [" in zf.read("model.py").decode("utf-8")
