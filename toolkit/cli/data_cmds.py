"""Data commands: `cbtool demo-data`, `cbtool inspect`, `cbtool clean`, `cbtool split` (also into K folds)."""

from __future__ import annotations

import click

from toolkit.cli import main
from toolkit.cli._common import Choice, Output, Result, allow_pickle_option, cbtool_command


def warning_lines(warnings: list[str]) -> list[str]:
    """The human form of a command's `warnings` list: one `warning: ...` line each."""
    return [f"warning: {w}" for w in warnings]


@cbtool_command(main, "demo-data")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the npz.")
@click.option("--n", "n", type=int, default=2400, show_default=True, help="Number of images, planted ones included.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: the same seed gives the same file.")
@click.option("--truth", type=click.Path(dir_okay=False), help="Also write the ground truth of what was planted (JSON).")
def demo_data_command(out: Output, output, n, seed, truth) -> Result:
    """Write synthetic 8-class 96x96 blood-cell images (AN2DL 2024 schema) with planted duplicates, conflicts and memes."""
    from toolkit.data.demo import make_demo
    from toolkit.data.io import save_dataset
    from toolkit.errors import UsageError
    from toolkit.fsutil import write_json

    try:
        ds, planted = make_demo(n=n, seed=seed)
    except ValueError as exc:
        raise UsageError(f"--n: {exc}") from exc
    save_dataset(ds, output, schema="an2dl2024")
    if truth:
        write_json(truth, planted)
    counts = {kind: sum(len(g) - (0 if kind in ("meme", "conflict") else 1) for g in gs) for kind, gs in planted["groups"].items()}
    data = {"path": str(output), "n": len(ds), "seed": seed, "planted": counts, "truth": truth}
    return Result(data=data, human=f"wrote {output}: {len(ds)} images (planted: {counts})")


@cbtool_command(main, "inspect")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@allow_pickle_option
def inspect_command(out: Output, data, allow_pickle) -> Result:
    """Show shape, dtype, value range, class counts and the exact-duplicate count of a training npz."""
    from toolkit.data.io import load_dataset
    from toolkit.data.summary import describe

    info = describe(load_dataset(data, allow_pickle=allow_pickle))
    width = max(len(name) for name in info["class_counts"])
    lines = [f"{info['path']} ({info['schema']} schema)"]
    for head, (role, s) in zip(("stored", ""), info["stored"].items()):
        lines.append(f"{head:<11} {role}: '{s['key']}' {tuple(s['shape'])} {s['dtype']}" + (f", {s['converted']}" if s["converted"] else ""))
    lines += [f"images      {tuple(info['shape'])} {info['dtype']}, values {info['value_range'][0]}-{info['value_range'][1]}",
              f"duplicates  {info['exact_duplicates']} exact copies in {info['exact_duplicate_groups']} groups", "classes"]
    lines += [f"  {i:>2} {name:<{width}} {count:>7}" for i, (name, count) in enumerate(info["class_counts"].items())]
    return Result(data=info, human="\n".join(lines + warning_lines(info["warnings"])))


@cbtool_command(main, "clean")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Cleaned npz (same schema as DATA). Required unless --dry-run.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Directory for report.json and PNG contact sheets.")
@click.option("--dry-run", is_flag=True, help="Decide and report, but write no cleaned npz.")
@click.option("--conflicts", type=Choice(["drop", "keep-majority"]), default="drop", show_default=True, help="A duplicate group with different labels: drop all of it, or keep one copy with the majority label.")
@click.option("--threshold", type=click.IntRange(min=0, max=64), help="Hamming threshold for both pHash and dHash candidates (default 8).")
@click.option("--pixel-threshold", type=click.FloatRange(min=0), help="Max mean abs grey difference (0-255, 32x32, mean-centred) to confirm a near duplicate (default 1.5).")
@click.option("--contrast-threshold", type=click.FloatRange(min=0, max=1), help="... or within this share of the pair's lower contrast, for JPEG copies of high-contrast images (default 0.04; 0 = off).")
@click.option("--drop-outliers", type=click.IntRange(min=0), default=0, show_default=True, help="Also drop the N images most unlike their class.")
@allow_pickle_option
def clean_command(out: Output, data, output, report_dir, dry_run, conflicts, threshold, pixel_threshold, contrast_threshold, drop_outliers, allow_pickle) -> Result:
    """Remove exact and near duplicates, conflicting labels and out-of-context clusters; report what and why."""
    from toolkit.data.clean import CleanConfig
    from toolkit.data.clean_report import clean_file
    from toolkit.errors import ConfigError

    if output is None and not dry_run:
        raise ConfigError("clean needs -o/--output for the cleaned npz (or --dry-run to only report)")
    config = CleanConfig(conflicts=conflicts, drop_outliers=drop_outliers,
                         **({"phash_threshold": threshold, "dhash_threshold": threshold} if threshold is not None else {}),
                         **({"pixel_threshold": pixel_threshold} if pixel_threshold is not None else {}),
                         **({"contrast_threshold": contrast_threshold} if contrast_threshold is not None else {}))
    with out.progress_callback("perceptual hashes", "img") as hashed:
        report, extra = clean_file(data, output, report_dir, config, allow_pickle=allow_pickle, dry_run=dry_run,
                                   progress=hashed)
    payload = {**report.to_dict(), "output": None if dry_run else str(output), "report_dir": report_dir, "dry_run": dry_run}
    payload["removed"] = [{"index": r["index"], "reason": r["reason"], "group": r["group"], **{k: v for k, v in r.items() if k not in ("index", "reason", "group")}} for r in payload["removed"]]
    reasons = ", ".join(f"{k} {v}" for k, v in report.counts().items() if v)
    human = f"kept {len(report.kept)} of {report.n_input}; removed {len(report.removed)} ({reasons or 'nothing'})"
    human += "\n" + ("dry run: nothing written" if dry_run else f"wrote {output}") + (f"; report in {report_dir}" if report_dir else "")
    payload["warnings"] = list(extra["dataset"].warnings)  # the loader's sanity findings (e.g. 0-1 floats rescaled)
    return Result(data=payload, human="\n".join([human, *warning_lines(payload["warnings"])]))


@cbtool_command(main, "split")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--val", type=click.FloatRange(min=0, max=1, max_open=True), help="Validation fraction (per class; default 0.1; 0 with --test writes train.npz and test.npz only).")
@click.option("--test", type=click.FloatRange(min=0, max=1, max_open=True), help="Test fraction (per class; default 0, no test.npz).")
@click.option("--folds", type=click.IntRange(min=2), help="Write K folds instead: DIR/fold_1..fold_K (train.npz, val.npz) and DIR/folds.json.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the assignment of groups to splits.")
@click.option("--strict", is_flag=True, help="Refuse (exit 1, nothing written) when a class is too small to reach every split or fold.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory for train.npz, val.npz (and test.npz), or the folds.")
@allow_pickle_option
def split_command(out: Output, data, val, test, folds, seed, strict, out_dir, allow_pickle) -> Result:
    """Split stratified by class; near-duplicate groups never straddle train/val/test, or the K folds of --folds."""
    from toolkit.data.io import load_dataset
    from toolkit.data.split import fold_dataset, split_dataset

    if folds and (val is not None or test is not None):
        raise click.UsageError("--folds and --val/--test are exclusive: each fold is the validation set of one run")
    ds = load_dataset(data, allow_pickle=allow_pickle)
    if folds:
        result = fold_dataset(ds, out_dir, folds, seed, strict=strict)
        result.warnings[:0] = ds.warnings
        human = "\n".join(f"fold {f['fold']}: train {f['train']}, val {f['val']} -> {f['dir']}" for f in result.folds)
        human += f"\n{_groups_line(result.groups_kept_together, 'fold')}; {result.folds_json}"
        return Result(data=result.to_dict(), human="\n".join([human, *warning_lines(result.warnings)]))
    result = split_dataset(ds, out_dir, val=0.1 if val is None else val, test=test or 0.0, seed=seed, strict=strict)
    result.warnings[:0] = ds.warnings
    data_out = {**result.to_dict(ds), "seed": seed}
    human = "; ".join(f"{name} {s['n']} -> {s['path']}" for name, s in data_out["splits"].items())
    human += f"\n{_groups_line(result.groups_kept_together, 'split')}"
    return Result(data=data_out, human="\n".join([human, *warning_lines(result.warnings)]))


def _groups_line(n: int, part: str) -> str:
    """What group-awareness did, worded so that no count reads as a leakage warning."""
    if not n:
        return "no duplicate groups to keep together (no exact or near duplicates left)"
    return f"{n} duplicate groups each kept inside one {part}: none straddles two {part}s"
