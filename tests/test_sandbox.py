"""The one loader (toolkit.runtime.sandbox): extraction safety, the child's environment, failure kinds, limits.

Submissions here are numpy-only model.py files written into zips at test time and run in the `local` profile,
so each child costs a fraction of a second (no TensorFlow import).
"""

from __future__ import annotations

import json
import stat
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import SubmissionError
from toolkit.runtime.profiles import local_profile
from toolkit.runtime.sandbox import network_block_prefix, run_submission
from toolkit.submission_zip import SubmissionZip

X = {"clean": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)}


def make_zip(path: Path, model_py: str, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", textwrap.dedent(model_py))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def test_zip_slip_entries_are_refused(tmp_path):
    for bad in ("../evil.py", "/etc/evil.py", "a/../../evil.py"):
        path = tmp_path / "slip.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("model.py", "")
            zf.writestr(bad, "x")
        with pytest.raises(SubmissionError, match="outside the submission folder"):
            SubmissionZip(path).extract(tmp_path / "out", 100)
        assert not (tmp_path / "evil.py").exists()


def test_symlink_entries_are_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("weights.h5")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SubmissionError, match="symbolic link"):
        SubmissionZip(path).extract(tmp_path / "out", 100)


def test_child_sees_the_graders_environment(tmp_path):
    """cwd is the program folder (not the submission's), env is minimal, cbtool is not importable."""
    zip_path = make_zip(tmp_path / "env.zip", """
        import json, os, sys
        import numpy as np
        HERE = os.path.dirname(os.path.abspath(__file__))
        try:
            import toolkit
            CBTOOL = "importable"
        except ImportError as exc:
            CBTOOL = str(exc)

        class Model:
            def __init__(self):
                pass

            def predict(self, X):
                info = {"cwd": os.getcwd(), "here": HERE, "env": sorted(os.environ), "cbtool": CBTOOL,
                        "relative_exists": os.path.exists("weights.bin")}
                print(json.dumps(info))
                return np.zeros(len(X), dtype=np.int64)
        """, {"weights.bin": b"1"})
    outcome = run_submission(zip_path, local_profile(), X)
    assert outcome.status == "ok", outcome.failure
    info = json.loads(outcome.stdout_tail.strip().splitlines()[-1])
    assert Path(info["cwd"]).name == "program" and Path(info["here"]).name == "submission"
    assert info["relative_exists"] is False
    assert "PYTHONPATH" not in info["env"] and "PYTHONUNBUFFERED" in info["env"]
    assert set(info["env"]) <= {"PYTHONUNBUFFERED", "PATH", "HOME", "LC_CTYPE"}
    assert "not available in the grader" in info["cbtool"]
    assert outcome.outputs["clean"].tolist() == [0, 0]
    assert outcome.timing["import_s"] is not None and "clean" in outcome.timing["predict_s"]


@pytest.mark.skipif(not network_block_prefix(), reason="unshare -n is not usable on this machine")
def test_network_is_blocked(tmp_path):
    zip_path = make_zip(tmp_path / "net.zip", """
        import socket
        import numpy as np

        class Model:
            def predict(self, X):
                try:
                    socket.create_connection(("1.1.1.1", 53), timeout=2)
                    return np.ones(len(X), dtype=np.int64)
                except OSError:
                    return np.zeros(len(X), dtype=np.int64)
        """)
    outcome = run_submission(zip_path, local_profile(), X)
    assert outcome.network_blocked and outcome.outputs["clean"].tolist() == [0, 0]


FAILING = {
    "import_error": ("import", "import keras_cv\n", "No module named 'keras_cv'"),
    "load_error": ("load", "import numpy as np\nclass Model:\n    def __init__(self):\n        np.load('weights.npz')\n", "weights.npz"),
    "wrong_class": ("load", "class model:\n    def __init__(self, path):\n        pass\n", "no class 'Model'"),
    "predict_error": ("predict", "class Model:\n    def predict(self, X):\n        raise ValueError('bad shape')\n", "ValueError: bad shape"),
    "exit": ("predict", "import sys\nclass Model:\n    def predict(self, X):\n        sys.exit(0)\n", "sys.exit(0)"),
    "os_exit": ("predict", "import os\nclass Model:\n    def predict(self, X):\n        os._exit(0)\n", "os._exit()"),
    "timeout": ("predict", "import time\nclass Model:\n    def predict(self, X):\n        time.sleep(30)\n", "1 s wall-clock limit"),
    "killed": ("predict", "import numpy as np\nclass Model:\n    def predict(self, X):\n        a = np.ones((400, 1024, 1024), np.uint8)\n        import time; time.sleep(5)\n", "budget"),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_each_failure_kind_is_classified(tmp_path, case):
    phase, source, message = FAILING[case]
    kind = {"wrong_class": "load_error", "os_exit": "exit"}.get(case, case)
    zip_path = make_zip(tmp_path / f"{case}.zip", source)
    outcome = run_submission(zip_path, local_profile(), X, time_limit_s=1 if case == "timeout" else 20, memory_limit_mb=200)
    assert outcome.status == "failed"
    assert (outcome.failure.kind, outcome.failure.phase) == (kind, phase)
    assert message in outcome.failure.message
    if case == "killed":
        assert outcome.peak_memory_mb > 200


def test_contract_2023_passes_the_submission_path(tmp_path):
    zip_path = make_zip(tmp_path / "y23.zip", """
        import os
        import numpy as np

        class model:
            def __init__(self, path):
                self.k = int(open(os.path.join(path, "k.txt")).read())

            def predict(self, X):
                return np.full(len(X), self.k, dtype=np.int64)
        """, {"k.txt": b"3", "metadata": b""})
    from dataclasses import replace

    profile = replace(local_profile(), contract=2023)
    outcome = run_submission(zip_path, profile, X)
    assert outcome.status == "ok", outcome.failure
    assert outcome.outputs["clean"].tolist() == [3, 3]


def test_runtime_list_and_create_with_an_unreachable_registry(tmp_path, monkeypatch):
    """`runtime list` shows every profile; `runtime create` says clearly when pip cannot reach the registry."""
    from click.testing import CliRunner

    from toolkit.cli import main

    monkeypatch.setenv("CBTOOL_CACHE_DIR", str(tmp_path / "cache"))
    listed = CliRunner().invoke(main, ["runtime", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["profile"]: r for r in json.loads(listed.output)["runtimes"]}
    assert rows["local"]["status"] == "ready" and rows["an2dl-2024"]["status"] == "not created"
    profiles = tmp_path / "p.toml"
    profiles.write_text('[profiles.offline]\ncontract = 2024\npackages = ["cbtool-no-such-package==0.0.1"]\n')
    for key, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
                       "PIP_NO_CACHE_DIR": "1", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""}.items():
        monkeypatch.setenv(key, value)
    created = CliRunner().invoke(main, ["runtime", "create", "offline", "--profiles-file", str(profiles), "--json"])
    assert created.exit_code == 1, created.output
    message = json.loads(created.output)["error"]["message"]
    assert "registry (http://127.0.0.1:9/simple) cannot be reached" in message and "cbtool runtime create offline" in message


def test_runtime_create_shows_pip_progress_and_is_reused(tmp_path, monkeypatch):
    """A user profile with one small package: pip's progress lines reach stderr; a second create reuses the venv."""
    from click.testing import CliRunner

    from toolkit.cli import main

    monkeypatch.setenv("CBTOOL_CACHE_DIR", str(tmp_path / "cache"))
    profiles = tmp_path / "p.toml"
    profiles.write_text('[profiles.tiny]\ncontract = 2024\npackages = ["six"]\n')
    created = CliRunner().invoke(main, ["runtime", "create", "tiny", "--profiles-file", str(profiles)])
    if created.exit_code != 0 and "registry" in created.output:
        pytest.skip(f"pip cannot reach a package registry: {created.output[-300:]}")
    assert created.exit_code == 0, created.output
    assert "pip: Successfully installed six" in created.output and "created in" in created.output
    again = CliRunner().invoke(main, ["runtime", "create", "tiny", "--profiles-file", str(profiles), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["reused"] is True
