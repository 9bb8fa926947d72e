"""Shared CLI plumbing: the --json/--quiet/--debug options, output, and error translation."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import click

from toolkit.errors import EXIT_OK, CbtoolError
from toolkit.fsutil import json_default


@dataclass
class Output:
    """Where a command writes: JSON on stdout, or human text on stdout and progress on stderr."""

    json: bool = False
    quiet: bool = False
    debug: bool = False

    @property
    def show_progress(self) -> bool:
        return not (self.json or self.quiet)

    def info(self, message: str) -> None:
        """A human line on stderr (hidden by --quiet and --json)."""
        if self.show_progress:
            click.echo(message, err=True)

    def progress(self, iterable: Iterable | None = None, **kwargs: Any):
        """A tqdm progress bar on stderr, disabled under --quiet/--json."""
        from tqdm import tqdm

        return tqdm(iterable, file=sys.stderr, disable=not self.show_progress, dynamic_ncols=True, **kwargs)

    @contextlib.contextmanager
    def progress_callback(self, desc: str, unit: str):
        """Yield `update(k, total)` for library code that reports work done (k=0 announces the total).

        The bar opens at the first report, so an error before any work (a bad input file) prints no empty bar,
        and closes when the total is reached, so its rate is the stage's own.
        """
        bars: list = []

        def update(k: int, total: int) -> None:
            if not bars:
                bars.append(self.progress(total=total, desc=desc, unit=unit))
            bars[0].update(k)
            if bars[0].n >= total:
                bars[0].close()

        try:
            yield update
        finally:
            for bar in bars:
                bar.close()


@dataclass
class Result:
    """What a command produced: a JSON-able payload, the human rendering, and the exit code."""

    data: dict
    human: str = ""
    exit_code: int = EXIT_OK


def _emit_json(payload: dict) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False, default=_json_default))


def _json_default(obj: Any):
    """fsutil's numpy/path conversions; on stdout anything else becomes its string rather than an error."""
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON document on stdout, errors included.")(fn)


def quiet_option(fn):
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or chatter on stderr.")(fn)


def debug_option(fn):
    return click.option("--debug", is_flag=True, help="Show the full traceback instead of a one-line error.")(fn)


def cbtool_command(group: click.Group, name: str, **kwargs: Any) -> Callable:
    """Register `fn(out, **options) -> Result` as a command with --json, --quiet and --debug."""

    def decorator(fn: Callable[..., Result]) -> click.Command:
        @json_option
        @quiet_option
        @debug_option
        @functools.wraps(fn)
        def wrapper(as_json: bool, quiet: bool, debug: bool, **options: Any) -> None:
            out = Output(json=as_json, quiet=quiet, debug=debug)
            try:
                result = fn(out, **options)
            except CbtoolError as exc:
                _fail(out, exc.to_dict(), exc.exit_code, exc)
            except KeyboardInterrupt:
                _fail(out, {"type": "KeyboardInterrupt", "kind": "interrupted", "message": "interrupted"}, 130, None)
            except click.exceptions.Exit:
                raise
            if as_json:
                _emit_json(result.data)
            elif result.human:
                click.echo(result.human)
            sys.exit(result.exit_code)

        return group.command(name, **kwargs)(wrapper)

    return decorator


def _fail(out: Output, error: dict, code: int, exc: BaseException | None) -> None:
    if out.debug and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    if out.json:
        _emit_json({"error": error})
    else:
        click.echo(f"error: {error['message']}", err=True)
    sys.exit(code)
