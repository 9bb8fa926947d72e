"""`cbtool train`: fine-tune a ConvNeXt on an npz into a run dir (resumable)."""

from __future__ import annotations

import click

from toolkit.cli import main
from toolkit.cli._common import Choice, Output, Result, allow_pickle_option, cbtool_command
from toolkit.errors import UsageError
from toolkit.families import pretrained_variants, variant_names
from toolkit.train.augment import PRESETS, STAGES
from toolkit.train.config import CHOICES, TrainConfig


@cbtool_command(main, "train")
@click.argument("data", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--fold", "fold_dir", type=click.Path(exists=True, file_okay=False), help="A fold of `cbtool split --folds`: DIR/fold_i "
              "stands for DATA=DIR/fold_i/train.npz --val DIR/fold_i/val.npz, and the run dir records the fold.")
@click.option("--val", "val_path", type=click.Path(exists=True, dir_okay=False), help="Validation npz (default: a stratified hold-out of DATA).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML or YAML file of settings (flags override it).")
@click.option("--model", type=Choice(variant_names()), help=f"Architecture variant (default {TrainConfig.model}).")
@click.option("--weights", help="imagenet, none, or a weights file (default: imagenet where the variant has it: "
                                f"{', '.join(pretrained_variants())}; else none).")
@click.option("--epochs", help="Total epochs N, or N1,N2 for phase 1 (head only) and phase 2 (fine-tuning).")
@click.option("--batch-size", type=int, help="Batch size (default 32).")
@click.option("--input-size", type=int, help="Network input size; images are resized by the recorded preprocessing.")
@click.option("--augment", help=f"Augmentation: a preset ({', '.join(PRESETS)}) or a comma list of stages "
                                f"({', '.join(STAGES)}); default {TrainConfig.augment} = {','.join(PRESETS[TrainConfig.augment])}.")
@click.option("--invariance", type=Choice(CHOICES["invariance"]),
              help="What the label does not depend on: flips and 90-degree rotations are drawn only where declared "
                   f"(hflip: left-right; flip: both mirrors; d4: mirrors and rotations). Default {TrainConfig.invariance}.")
@click.option("--holdout-families", callback=lambda _ctx, _param, value: _families(value),
              help="Comma list of corruption families the corrupt stage never draws, so `simulate --shift` can score "
                   "them as unseen.")
@click.option("--class-weights", type=Choice(CHOICES["class_weights"]), help="Loss weights per class (default balanced).")
@click.option("--optimizer", type=Choice(CHOICES["optimizer"]), help="Optimizer (default adamw).")
@click.option("--seed", type=int, help="Seed for the split, initialisation, shuffling and augmentation (default 0).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in RUN_DIR with its saved config.")
@allow_pickle_option
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
def train_command(out: Output, data, val_path, config_path, run_dir, resume, allow_pickle, **overrides) -> Result:
    """Train a ConvNeXt (phase 1: head on a frozen backbone; phase 2: fine-tune) and write a run dir."""
    from toolkit.train.augment import describe
    from toolkit.train.config import load_saved_config, resolve_config
    from toolkit.train.fit import load_training_data, train
    from toolkit.train.recover import resume_command

    fold_dir = overrides.pop("fold_dir")
    data, val_path, fold = _fold_inputs(data, val_path, fold_dir)
    given = {k: v for k, v in overrides.items() if v is not None}
    if resume and (given or config_path):
        raise UsageError(f"--resume continues with the saved {run_dir}/config.json; drop --config and the other settings")
    config = None if resume else resolve_config(config_path, given)
    train_set, val_set = load_training_data(data, val_path, allow_pickle)
    command = resume_command(None if fold else data, None if fold else val_path, fold_dir, run_dir, allow_pickle)
    result = train(train_set, val_set, config, run_dir, resume=resume, verbose=out.show_progress, log=out.info,
                   warn=_warner(out), resume_command=command)
    if fold:
        from toolkit.train.cv import record_fold

        record_fold(run_dir, fold)
    record = load_saved_config(run_dir).training_record()
    summary = {**result.summary(), "augmentation": record}
    m = result.metrics or {}
    near = " (near chance: not learned)" if m.get("near_chance") else ""
    lines = [f"validation accuracy {m.get('accuracy', 0):.4f}{near}, chance {m.get('chance_level', 0):.4f}, balanced "
             f"accuracy {m.get('balanced_accuracy', 0):.4f}, macro F1 {m.get('macro_f1', 0):.4f} (best epoch "
             f"{result.best_epoch} of {m.get('epochs_done', result.epochs_done)}, {result.seconds:.0f} s)",
             *result.describe_stops(), f"augmentation: {describe(record)}"]
    lines += [f"run dir: {run_dir}"]  # warnings were printed on stderr as they were found (and are in --json)
    return Result(data=summary, human="\n".join(lines))


def _warner(out: Output):
    """Warnings go to stderr as they are found, even under --quiet (they are not chatter); --json carries them."""
    return lambda message: None if out.json else click.echo(f"warning: {message}", err=True)


def _families(value: str | None) -> tuple[str, ...] | None:
    """`--holdout-families a,b` -> ("a", "b"); the config check names unknown families."""
    return None if value is None else tuple(f.strip() for f in value.split(",") if f.strip())


def _fold_inputs(data, val_path, fold_dir):
    """DATA and --val, from --fold DIR/fold_i when given (then neither may be given as well)."""
    if fold_dir is None:
        if data is None:
            raise click.UsageError("missing argument DATA (or --fold DIR/fold_i)")
        return data, val_path, None
    if data is not None or val_path is not None:
        raise click.UsageError("--fold gives the training and validation files; drop DATA and --val")
    from toolkit.train.cv import resolve_fold

    fold = resolve_fold(fold_dir)
    return str(fold.train), str(fold.val), fold
