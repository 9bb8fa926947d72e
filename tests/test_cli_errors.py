"""The CLI boundary: every failure is one line (or one JSON document under --json); a traceback only with --debug."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import toolkit.cli
import toolkit.runtime.runtimes
from toolkit.cli import main
from toolkit.errors import ConfigError, SubmissionFailed

CBTOOL = Path(sys.executable).with_name("cbtool")  # the installed entry point of this venv


def _raising(exc: BaseException):
    def boom(*args, **kwargs):
        raise exc

    return boom


def _list_runtimes(monkeypatch, replacement, *flags: str):
    """`cbtool runtime list FLAGS` through click, with the library function it calls replaced."""
    monkeypatch.setattr(toolkit.runtime.runtimes, "list_runtimes", replacement)
    return CliRunner().invoke(main, ["runtime", "list", *flags])


def test_bad_profiles_file_is_one_json_document(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[profiles]\nfoo = 3\n")
    proc = subprocess.run([str(CBTOOL), "runtime", "list", "--profiles-file", str(bad), "--json"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "error" in json.loads(proc.stdout)  # the whole of stdout is one document
    assert "Traceback" not in proc.stderr
    human = subprocess.run([str(CBTOOL), "runtime", "list", "--profiles-file", str(bad)], capture_output=True, text=True)
    assert human.returncode == 1 and human.stdout == ""
    assert human.stderr.startswith("error: ") and human.stderr.count("\n") == 1, human.stderr


def test_unexpected_exception_is_one_line(monkeypatch):
    result = _list_runtimes(monkeypatch, _raising(ValueError("boom\n  on two lines")))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: internal error: ValueError: boom on two lines (run with --debug for the traceback)\n"


def test_unexpected_exception_traceback_only_with_debug(monkeypatch):
    result = _list_runtimes(monkeypatch, _raising(ValueError("boom")), "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ValueError: boom" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: internal error: ValueError: boom"


def test_unexpected_exception_under_json(monkeypatch):
    result = _list_runtimes(monkeypatch, _raising(ValueError("boom")), "--json")
    assert result.exit_code == 1 and result.stderr == ""
    assert json.loads(result.stdout) == {"error": {"type": "ValueError", "kind": "internal", "message": "boom"}}


def test_unserialisable_result_is_still_one_json_document(monkeypatch):
    # json.dumps refuses non-string keys: the failure happens while printing, after the command returned
    result = _list_runtimes(monkeypatch, lambda profiles_file: [{("not", "a", "str"): 1}], "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["kind"] == "internal"


@pytest.mark.parametrize("exc, code, line", [
    (ConfigError("profiles.toml: bad"), 1, "error: profiles.toml: bad\n"),
    (SubmissionFailed("predict() raised"), 3, "error: predict() raised\n"),
    (KeyboardInterrupt(), 130, "error: interrupted\n"),
])
def test_expected_failures_keep_their_exit_codes(monkeypatch, exc, code, line):
    result = _list_runtimes(monkeypatch, _raising(exc))
    assert (result.exit_code, result.stderr) == (code, line)


def test_click_exit_passes_through(monkeypatch):
    result = _list_runtimes(monkeypatch, _raising(click.exceptions.Exit(0)))
    assert result.exit_code == 0 and result.output == ""


def test_failure_outside_any_command(monkeypatch):
    monkeypatch.setattr(type(main), "resolve_command", _raising(RuntimeError("lost")))
    human = CliRunner().invoke(main, ["inspect", "x.npz"])
    assert human.exit_code == 1 and "Traceback" not in human.stderr
    assert human.stderr == "error: internal error: RuntimeError: lost (run with --debug for the traceback)\n"
    as_json = CliRunner().invoke(main, ["inspect", "x.npz", "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["error"]["kind"] == "internal"


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_closed_stdout_is_silent(flags):
    proc = subprocess.Popen([str(CBTOOL), "runtime", "list", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader goes away before cbtool prints (`cbtool ... | head -0`): not cbtool's failure
    stderr = proc.stderr.read()
    proc.wait(timeout=60)
    assert stderr == ""


def test_missing_command_module_is_an_import_error(monkeypatch):
    monkeypatch.setattr(toolkit.cli, "COMMAND_MODULES", (*toolkit.cli.COMMAND_MODULES, "no_such_cmds"))
    with pytest.raises(ImportError, match=r"toolkit\.cli\.no_such_cmds"):
        toolkit.cli._register()
