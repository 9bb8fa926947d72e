"""Shared CLI plumbing: the --json/--quiet/--debug options, output, and error translation."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import click

from toolkit.cli._native_logs import quiet_native_logs
from toolkit.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, CbtoolError, UsageError, did_you_mean
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
    _echo(json.dumps(payload, indent=2, sort_keys=False, default=_json_default))


def _echo(text: str, err: bool = False) -> None:
    """click.echo that survives a closed pipe (`cbtool inspect x --json | head -1`): the reader is gone, so stop talking."""
    try:
        click.echo(text, err=err)
    except BrokenPipeError:
        # Point the fd at devnull so the interpreter's final flush cannot print a BrokenPipeError of its own.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), (sys.stderr if err else sys.stdout).fileno())


def _json_default(obj: Any):
    """fsutil's numpy/path conversions; on stdout anything else becomes its string rather than an error."""
    try:
        return json_default(obj)
    except TypeError:
        return str(obj)


# The three flags every command takes, after the command name or (on the group) before it.
_FLAGS = {
    "as_json": (("--json",), "Print exactly one JSON document on stdout, errors included."),
    "quiet": (("--quiet", "-q"), "No progress bars or chatter on stderr."),
    "debug": (("--debug",), "Show the full traceback instead of a one-line error, and TensorFlow's own log lines."),
}


def _flag(name: str, **kwargs: Any) -> Callable:
    decls, text = _FLAGS[name]
    return click.option(*decls, name, is_flag=True, help=text, **kwargs)


def json_option(fn):
    return _flag("as_json")(fn)


def quiet_option(fn):
    return _flag("quiet")(fn)


def debug_option(fn):
    return _flag("debug")(fn)


def _remember_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:  # ctx.meta is shared by the whole context chain, so the command below sees it
        ctx.meta[f"cbtool.{param.name}"] = True


def global_flags(group: click.Group) -> click.Group:
    """Let --json/--quiet/--debug also come before the command name (`cbtool --json inspect x`)."""
    for name in _FLAGS:
        group = _flag(name, expose_value=False, callback=_remember_flag)(group)
    return group


class Choice(click.Choice):
    """click.Choice whose refusal ends with " (did you mean X?)": use it for every option with a closed set of values."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            self.fail(f"{exc.message}{did_you_mean(value, self.choices)}", param, ctx)


class ChoiceList(Choice):
    """A comma list of `Choice` values ("d4" or "d4,flip,none") -> a tuple; each value refused as `Choice` refuses."""

    name = "choice list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [v.strip() for v in str(value).split(",")]
        return tuple(super(ChoiceList, self).convert(v, param, ctx) for v in parts)

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:  # click 8.2 passes ctx too
        return "[" + "|".join(self.choices) + "][,...]"


def allow_pickle_option(fn: Callable) -> Callable:
    """--allow-pickle (parameter `allow_pickle`): object arrays in an npz load only when the user says so."""
    return click.option("--allow-pickle", is_flag=True, help="Allow object arrays in the npz: unpickling runs code from "
                        "the file, so trust its source (the AN2DL 2023 string labels need it).")(fn)


def profiles_file_option(fn: Callable) -> Callable:
    """--profiles-file PATH (parameter `profiles_file`): user-defined runtime profiles."""
    # Eager, so --profile's check sees the file's profiles whichever of the two comes first on the line.
    return click.option("--profiles-file", type=click.Path(dir_okay=False, path_type=Path), default=None, is_eager=True,
                        help="TOML file with user-defined profiles.")(fn)


def check_profile_name(ctx: click.Context, param: click.Parameter, name: str | None) -> str | None:
    """Click callback: an unknown profile name is a usage error (exit 2) with a "did you mean", before any work."""
    if name is None or ctx.resilient_parsing:
        return name
    from toolkit.runtime.profiles import profile_names, unknown_profile_message

    known = profile_names(ctx.params.get("profiles_file"))
    if name not in known:
        where = param.opts[0] if isinstance(param, click.Option) else (param.metavar or str(param.name).upper())
        raise UsageError(f"{where}: {unknown_profile_message(name, known)}")
    return name


def profile_option(default: str | None) -> Callable:
    """--profile NAME (parameter `profile_name`); default None means "the zip's manifest.json, else an2dl-2024"."""
    if default is None:
        text = "Runtime profile (default: the one recorded in the zip's manifest.json, else an2dl-2024)."
    else:
        text = "Runtime profile: an2dl-2024, an2dl-2023, local, or one from --profiles-file."
    return click.option("--profile", "profile_name", default=default, show_default=default is not None, help=text,
                        callback=check_profile_name)


def cbtool_command(group: click.Group, name: str, **kwargs: Any) -> Callable:
    """Register `fn(out, **options) -> Result` as a command with --json, --quiet and --debug.

    Every failure inside the command, printing its result included, leaves through `fail`: one line, or one JSON document.
    """

    def decorator(fn: Callable[..., Result]) -> click.Command:
        @json_option
        @quiet_option
        @debug_option
        @functools.wraps(fn)
        def wrapper(as_json: bool, quiet: bool, debug: bool, **options: Any) -> None:
            meta = click.get_current_context().meta  # the flags given before the command name
            out = Output(json=as_json or meta.get("cbtool.as_json", False), quiet=quiet or meta.get("cbtool.quiet", False),
                         debug=debug or meta.get("cbtool.debug", False))
            quiet_native_logs(not out.debug)  # before the command imports TensorFlow
            try:
                code = _emit(out, fn(out, **options))
            except (click.exceptions.Exit, click.ClickException, click.Abort):
                raise  # click's own: it prints usage errors (exit 2); under --json the group's main reports them
            except (Exception, KeyboardInterrupt) as exc:
                code = fail(out, exc)
            sys.exit(code)

        return group.command(name, **kwargs)(wrapper)

    return decorator


def _emit(out: Output, result: Result) -> int:
    """Print the result (its JSON, or its human text) and return its exit code."""
    if out.json:
        _emit_json(result.data)
    elif result.human:
        _echo(result.human)
    return result.exit_code


def fail(out: Output, exc: BaseException) -> int:
    """Report `exc` as one error line (under --json: one JSON document on stdout); the traceback only with --debug."""
    error, code = _classify(exc)
    if out.debug:
        traceback.print_exception(exc, file=sys.stderr)
    if out.json:
        _emit_json({"error": error})
    elif error["kind"] == "internal":
        hint = "" if out.debug else " (run with --debug for the traceback)"
        _echo(f"error: internal error: {error['type']}: {error['message']}{hint}", err=True)
    elif error["kind"] == "usage":  # one line, where click would print its usage block
        _echo(f"error: {' '.join(error['message'].split())}{_help_hint(exc)}", err=True)
    else:
        _echo(f"error: {error['message']}", err=True)
    return code


def _help_hint(exc: BaseException) -> str:
    """" (see 'cbtool check --help')" for a usage error raised while a command line was being read or run."""
    ctx = getattr(exc, "ctx", None) or click.get_current_context(silent=True)
    return f" (see '{ctx.command_path} --help')" if ctx is not None else ""


def _classify(exc: BaseException) -> tuple[dict, int]:
    """The error document and exit code: cbtool's errors speak for themselves; anything unexpected is 'internal'."""
    if isinstance(exc, CbtoolError):
        return exc.to_dict(), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return {"type": "KeyboardInterrupt", "kind": "interrupted", "message": "interrupted"}, EXIT_INTERRUPTED
    if isinstance(exc, click.Abort):
        return {"type": "Abort", "kind": "interrupted", "message": "aborted"}, EXIT_ERROR
    if isinstance(exc, click.ClickException):
        # click names its usage errors differently across versions (NoSuchCommand, BadParameter...); the type stays put
        kind, name = ("usage", "UsageError") if isinstance(exc, click.UsageError) else ("error", type(exc).__name__)
        return {"type": name, "kind": kind, "message": exc.format_message()}, exc.exit_code
    # A one-line promise: fold a multi-line message (some libraries' errors) onto one line.
    message = " ".join(str(exc).split()) or "(no message)"
    return {"type": type(exc).__name__, "kind": "internal", "message": message}, EXIT_ERROR
