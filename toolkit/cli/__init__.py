"""The `cbtool` command line: a thin click layer over `toolkit`. Commands live in sibling modules."""

from __future__ import annotations

import importlib
import sys

import click

from toolkit import __version__
from toolkit.cli._common import Output, fail, global_flags

# Each module registers its commands on `main` as it is imported.
COMMAND_MODULES = ("data_cmds", "train_cmds", "export_cmds", "submission_cmds", "runtime_cmds", "simulate_cmds", "predict_cmds",
                   "cv_cmds")


class _Group(click.Group):
    """A group whose failures outside any command are still one line, or one JSON document under --json."""

    def main(self, args=None, **kwargs):  # noqa: D401 - click signature
        argv = list(sys.argv[1:] if args is None else args)
        out = Output(json="--json" in argv, debug="--debug" in argv)
        try:
            # click must not print its own multi-line usage text: its errors come back here and leave through `fail`.
            code = super().main(args=argv, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.exceptions.NoArgsIsHelpError as exc:
            if not out.json:
                exc.show()  # `cbtool` alone: the help text, exit 2
            code = fail(out, exc) if out.json else exc.exit_code
        except (Exception, KeyboardInterrupt) as exc:
            code = fail(out, exc)
        sys.exit(code if isinstance(code, int) else 0)


@global_flags
@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cbtool")
def main() -> None:
    """cbtool: make Codabench/CodaLab code-submission failures visible before you upload.

    --json, --quiet and --debug go before or after the command name.

    Exit codes: 0 ok, 1 cbtool error, 2 usage error (a bad option value), 3 the submission failed, 130 interrupted.
    """


def _register() -> None:
    """Import every command module; a missing one is an ImportError that names it, not a silently absent command."""
    for module in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module}")


_register()
