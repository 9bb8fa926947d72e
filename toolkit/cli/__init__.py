"""The `cbtool` command line: a thin click layer over `toolkit`. Commands live in sibling modules."""

from __future__ import annotations

import json
import sys

import click

from toolkit import __version__
from toolkit.errors import EXIT_USAGE


class _Group(click.Group):
    """A group that reports usage errors as JSON when --json was asked for."""

    def main(self, args=None, **kwargs):  # noqa: D401 - click signature
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" in argv:
            try:
                return super().main(args=argv, standalone_mode=False, **kwargs)
            except click.UsageError as exc:
                click.echo(json.dumps({"error": {"type": "UsageError", "kind": "usage", "message": exc.format_message()}}, indent=2))
                sys.exit(EXIT_USAGE)
            except click.exceptions.Exit as exc:
                sys.exit(exc.exit_code)
            except click.Abort:
                sys.exit(1)
        return super().main(args=argv, **kwargs)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cbtool")
def main() -> None:
    """cbtool: make Codabench/CodaLab code-submission failures visible before you upload.

    Exit codes: 0 ok, 1 cbtool error, 2 usage error, 3 the submission failed.
    """


def _register() -> None:
    import importlib

    for module in ("data_cmds", "train_cmds", "export_cmds", "submission_cmds", "runtime_cmds", "simulate_cmds"):
        try:
            importlib.import_module(f"toolkit.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"toolkit.cli.{module}":
                raise


_register()
