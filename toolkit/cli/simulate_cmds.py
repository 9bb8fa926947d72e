"""`cbtool simulate`: run a submission zip like the grader, score it, and estimate the hidden-test drop."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli import main
from toolkit.cli._common import Output, Result, allow_pickle_option, cbtool_command, profile_option, profiles_file_option


@cbtool_command(main, "simulate", help=(
    "Run SUBMISSION (a zip) through the grader's loader on a held-out npz, check its output contract, and score it. "
    "--shift adds the seeded corruption suite (the hidden-test estimate). Exit 3 when the submission fails."
))  # fmt: skip
@click.argument("submission", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Held-out npz (images + labels).")
@profile_option(None)
@profiles_file_option
@click.option("--shift", is_flag=True, help="Also score the corruption suite: 11 corruptions x severities 1-5.")
@click.option("--shift-images", type=click.IntRange(min=0), default=200, show_default=True, help="Images per corrupted set: a seeded sample of --data (0 = all). The suite predicts 55 sets.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds for the grader's own pass: import + load (+ fit) + one predict of --data (default: the profile's). simulate's extra probes are timed apart.")
@click.option("--memory-limit", default=None, help="Memory budget, e.g. 4G or 512M (default: the profile's). Approximates the grader.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write scores.json, details.json, PNGs and report.html here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corruption suite and its sample.")
@click.option("--class-map", "class_map", default=None, metavar="MAP", help="How --data's classes correspond to the submission's (manifest.json), when they differ: 'heldout=submission,...' or a JSON file {\"heldout\": \"submission\"}; names or indices. Without it, other classes exit 1.")
@click.option("--compare-tta", "compare_tta", is_flag=True, help="Also score the zip's network under every other TTA mode (none 1 view, flip 2, d4 8) on --data and, with --shift, on every corrupted set, inside the sandbox, and say which mode is best (cbtool-built zips). Off by default: the extra predicts cost the other modes' views over the zip's own, 4.5x its predict time for a flip zip, 10x for none, 0.4x for d4 (timed apart from the grader's pass).")
@allow_pickle_option
def simulate_command(out: Output, submission, data, profile_name, profiles_file, shift, shift_images, time_limit, memory_limit, report_dir, seed, class_map, compare_tta, allow_pickle) -> Result:
    from toolkit.errors import EXIT_OK, EXIT_SUBMISSION_FAILED
    from toolkit.runtime.heldout import parse_class_map
    from toolkit.runtime.simulate import SimulateOptions, parse_memory, simulate
    from toolkit.simulate_report import render_text
    from toolkit.submission.build import submission_profile
    from toolkit.submission.check import check_submission

    profile = submission_profile(submission, profile_name, profiles_file)
    options = SimulateOptions(time_limit, parse_memory(memory_limit), shift, shift_images or None, seed, allow_pickle,
                              class_map=parse_class_map(class_map), compare_tta=compare_tta)
    findings = check_submission(submission, profile).issues if Path(submission).is_file() else []
    with out.progress_callback("input sets predicted", "set") as predicted:
        result = simulate(submission, data, profile, options, log=out.info, progress=predicted, findings=findings)
    if report_dir is not None:
        from toolkit.simulate_report import write_report

        write_report(result, report_dir, allow_pickle=allow_pickle)
    return Result(data=result.to_dict(), human=render_text(result), exit_code=EXIT_OK if result.ok else EXIT_SUBMISSION_FAILED)
