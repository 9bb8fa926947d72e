"""`cbtool runtime create PROFILE` / `cbtool runtime list`: the pinned Python environments that stand in for graders."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli import main
from toolkit.cli._common import Output, Result, cbtool_command, check_profile_name, global_flags, profiles_file_option


@global_flags
@main.group("runtime")
def runtime_group() -> None:
    """Runtime profiles: the grader's Python environments (pinned venvs cached under the user cache dir)."""


@cbtool_command(runtime_group, "create", help="Build PROFILE's pinned venv once with pip (needs the package registry); reused afterwards.")
@click.argument("profile_name", metavar="PROFILE", callback=check_profile_name)
@profiles_file_option
def create_command(out: Output, profile_name: str, profiles_file: Path | None) -> Result:
    from toolkit.runtime.runtimes import create_runtime

    info = create_runtime(profile_name, profiles_file, log=out.info)
    verb = "already existed" if info["reused"] else f"created in {info['seconds']:.0f} s"
    return Result(data=info, human=f"{info['profile']}: {info['python']} ({verb})")


@cbtool_command(runtime_group, "list", help="Show every known profile and whether its runtime venv exists.")
@profiles_file_option
def list_command(out: Output, profiles_file: Path | None) -> Result:
    from toolkit.runtime.runtimes import list_runtimes

    rows = list_runtimes(profiles_file)
    lines = [f"{'profile':<14} {'contract':<8} {'status':<12} packages / interpreter"]
    for row in rows:
        where = row["python"] if row["python"] else ", ".join(row["packages"])
        lines.append(f"{row['profile']:<14} {row['contract']:<8} {row['status']:<12} {where}")
    return Result(data={"runtimes": rows}, human="\n".join(lines))
