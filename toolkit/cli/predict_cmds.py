"""`cbtool predict`: a submission's predictions on a test npz as a CSV, for competitions graded on result files."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli import main
from toolkit.cli._common import Output, Result, allow_pickle_option, cbtool_command, profile_option, profiles_file_option


@cbtool_command(main, "predict", help=(
    "Run SOURCE (a submission zip, or a run/export dir built into one for the profile) through the grader's loader "
    "on a test npz (labels optional) and write one CSV row per image, in input order: <id-column>,label. Ids come "
    "from an `ids`/`id` array in the npz, else the row index. Exit 3 when the submission fails or returns bad output "
    "(no CSV is written then)."
))  # fmt: skip
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Test npz: images (or data/x), optional ids.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The CSV to write (atomically).")
@click.option("--id-column", default="id", show_default=True, help="Header of the id column.")
@click.option("--label-names", is_flag=True, help="Write class names (from the zip's manifest.json) instead of class indices.")
@profile_option(None)
@profiles_file_option
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per predict call (default: the whole set in one call, as graders do).")
@allow_pickle_option
def predict_command(out: Output, source, data, output, id_column, label_names, profile_name, profiles_file, batch_size, allow_pickle) -> Result:
    from toolkit.submission.predict import PredictOptions, predict, render
    from toolkit.submission.build import submission_profile

    profile = submission_profile(source, profile_name, profiles_file)  # a dir has no manifest: --profile, else an2dl-2024
    options = PredictOptions(id_column, label_names, batch_size, allow_pickle)
    with out.progress_callback("batches predicted", "batch") as predicted:
        result = predict(source, data, output, profile, options, log=out.info, progress=predicted)
    return Result(data=result.to_dict(), human=render(result))
