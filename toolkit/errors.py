"""The cbtool error hierarchy. The library raises these; the CLI turns them into one-line messages and exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SUBMISSION_FAILED = 3
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT


class CbtoolError(Exception):
    """Base class: a problem cbtool can explain in one line. Exit code 1."""

    exit_code = EXIT_ERROR
    kind = "error"

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, "kind": self.kind, "message": str(self)}


class UsageError(CbtoolError):
    """A command-line option has a value cbtool cannot use (an unknown profile, format or model; `--epochs 0`).
    Exit code 2, like click's own usage errors."""

    exit_code = EXIT_USAGE
    kind = "usage"


def did_you_mean(value: str, choices) -> str:
    """' (did you mean X?)' for the closest of `choices` to a misspelt `value`, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class DataError(CbtoolError):
    """A data file is missing, malformed or violates the expected schema."""

    kind = "data"


class ConfigError(CbtoolError):
    """A configuration value or file is invalid."""

    kind = "config"


class ExportError(CbtoolError):
    """A model could not be exported or failed its parity check."""

    kind = "export"


class SubmissionError(CbtoolError):
    """A submission zip or its contents break the grader's contract."""

    kind = "submission"


class RuntimeProfileError(CbtoolError):
    """A runtime profile is unknown, malformed, or its environment cannot be created."""

    kind = "runtime"


class SubmissionFailed(CbtoolError):
    """The submission itself failed when run the way the grader runs it. Exit code 3."""

    exit_code = EXIT_SUBMISSION_FAILED
    kind = "submission_failed"
