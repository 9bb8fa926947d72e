"""The CLI's promises: fast --help, help text and README entry for every command, honest exit codes, --json errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

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
