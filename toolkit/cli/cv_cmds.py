"""`cbtool cv-report`: pool the out-of-fold predictions of k-fold runs (`train --fold`) into one report."""

from __future__ import annotations

import click

from toolkit.cli import main
from toolkit.cli._common import Output, Result, cbtool_command


@cbtool_command(main, "cv-report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write cv_report.json and confusion_matrix.png here.")
def cv_report_command(out: Output, runs, report_dir) -> Result:
    """Out-of-fold accuracy (pooled, and per fold as mean ± std), per-class metrics and the confusion matrix of k-fold runs."""
    from toolkit.train.cv import cv_report, render

    result = cv_report(list(runs), report_dir)
    return Result(data=result.to_dict(), human=render(result))
