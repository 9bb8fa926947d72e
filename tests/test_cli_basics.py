"""The CLI's promises: fast --help, help text and README entry for every command, honest exit codes, --json errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import ROOT
from toolkit.cli import main
from toolkit.cli._common import profile_option, profiles_file_option

HEAVY = ("tensorflow", "keras", "onnxruntime", "onnx", "tf2onnx", "matplotlib")


def _commands(group=main, prefix=""):
    for name, cmd in sorted(group.commands.items()):
        full = f"{prefix}{name}"
        yield full, cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, full + " ")


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from toolkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_every_command_has_help_and_is_in_readme():
    readme = (ROOT / "README.md").read_text()
    names = [name for name, _ in _commands()]
    assert len(names) >= 3
    for name, cmd in _commands():
        assert (cmd.help or "").strip(), f"`cbtool {name}` has no help text"
        assert re.search(rf"cbtool {re.escape(name)}\b", readme), f"`cbtool {name}` is not documented in README.md"


def test_every_command_prints_its_help():
    """`cbtool CMD --help` renders every option (a custom parameter type's metavar included) and exits 0."""
    for name, _cmd in _commands():
        result = CliRunner().invoke(main, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Usage: " in result.output, (name, result.output)


def test_every_leaf_command_has_json_quiet_debug():
    for name, cmd in _commands():
        if hasattr(cmd, "commands"):
            continue
        opts = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        assert {"--json", "--quiet", "--debug"} <= opts, f"`cbtool {name}` lacks a shared option: {sorted(opts)}"


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_usage_error_exit_code_and_json():
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", "no-such-command"], capture_output=True, text=True)
    assert proc.returncode == 2 and "No such command" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", "no-such-command", "--json"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["kind"] == "usage"


def _option(decorator, name: str):
    return next(p for p in decorator(lambda: None).__click_params__ if p.name == name)


def test_shared_profile_options():
    pinned, from_zip = _option(profile_option("an2dl-2024"), "profile_name"), _option(profile_option(None), "profile_name")
    assert pinned.opts == ["--profile"] and pinned.default == "an2dl-2024" and pinned.show_default
    assert "--profiles-file" in pinned.help
    assert from_zip.default is None and "manifest.json" in from_zip.help
    profiles_file = _option(profiles_file_option, "profiles_file")
    assert profiles_file.opts == ["--profiles-file"] and profiles_file.default is None


# Lines TF 2.21 writes to fd 2 while `import tensorflow` loads its libraries (measured on this box), and one that is not.
TF_IMPORT_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795985716.062433   12443 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.\n"
    "I0000 00:00:1795985716.128247   12443 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.\n"
    "2024-05-01 12:00:00.123456: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT Warning: no TensorRT\n"
)


def _import_fake_tensorflow(tmp_path, quiet: bool) -> subprocess.CompletedProcess:
    """Import a stand-in `tensorflow` that writes TF's import-time lines (and one real line) straight to fd 2."""
    package = tmp_path / "tensorflow"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(f"import os\nos.write(2, {(TF_IMPORT_NOISE + 'a real line').encode()!r})\n"
                                         "os.write(2, b'\\n')\n")
    code = ("from toolkit.cli._native_logs import quiet_native_logs\n"
            f"quiet_native_logs({quiet})\n"
            "import os, tensorflow\n"
            "print(type(tensorflow.__loader__).__name__, type(tensorflow.__spec__.loader).__name__, "
            "os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60, env=env)


def test_tensorflow_import_lines_are_dropped_and_others_kept(tmp_path):
    quiet = _import_fake_tensorflow(tmp_path, quiet=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "a real line\n"
    assert quiet.stdout.split() == ["SourceFileLoader", "SourceFileLoader", "2"]  # the wrapper leaves no trace
    shown = _import_fake_tensorflow(tmp_path, quiet=False)
    assert shown.stderr == TF_IMPORT_NOISE + "a real line\n" and shown.stdout.split()[-1] == "None"


def test_export_prints_no_tensorflow_log_lines_unless_debug(tmp_path):
    from export_data import make_run_dir

    run = make_run_dir(tmp_path / "run")
    cbtool = Path(sys.executable).with_name("cbtool")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # conftest sets it; a user has not
    quiet = subprocess.run([str(cbtool), "export", str(run), "-o", str(tmp_path / "q"), "-q"], capture_output=True,
                           text=True, timeout=300, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    debug = subprocess.run([str(cbtool), "export", str(run), "-o", str(tmp_path / "d"), "-q", "--debug"], capture_output=True,
                           text=True, timeout=300, env=env)
    assert debug.returncode == 0, debug.stderr
    if not re.search(r"oneDNN|absl|cpu_feature_guard", debug.stderr):
        pytest.skip("this TensorFlow build prints no import-time log lines, so there is nothing to hide")


def test_shared_choice_says_did_you_mean():
    from toolkit.cli._common import Choice, Result, cbtool_command

    group = click.Group()

    @cbtool_command(group, "pick")
    @click.option("--fmt", type=Choice(["portable", "keras", "onnx"]))
    def pick(out, fmt):
        return Result(data={"fmt": fmt})

    assert json.loads(CliRunner().invoke(group, ["pick", "--fmt", "onnx", "--json"]).stdout) == {"fmt": "onnx"}
    refused = CliRunner().invoke(group, ["pick", "--fmt", "onnnx"])
    assert refused.exit_code == 2 and "(did you mean onnx?)" in refused.output
    assert "did you mean" not in CliRunner().invoke(group, ["pick", "--fmt", "tflite"]).output
