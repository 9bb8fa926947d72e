"""`cbtool build-submission`, `cbtool check`, `cbtool validate-preprocessing`: make and vet the zip the grader gets."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli import main
from toolkit.artifacts import FORMATS
from toolkit.cli._common import (Choice, ChoiceList, Output, Result, allow_pickle_option, cbtool_command,
                                 profile_option, profiles_file_option)
from toolkit.submission.tta_auto import AUTO, DEFAULT_IMAGES, DEFAULT_SHIFT
from toolkit.tta import TTA_VIEWS


@cbtool_command(main, "build-submission", help=(
    "Render a self-contained model.py from SOURCE (an export dir, or a run dir that is exported first) and zip it "
    "with the weights: entries at the root, deterministic bytes, manifest.json. Several SOURCEs make an ensemble: one "
    "model.py averaging the members' softmax (each with its own preprocessing, input size and TTA; families may be "
    "mixed), weighted by --weights. Or, with --from-keras MODEL and "
    "--preprocess SPEC, from a model trained in a notebook (.keras from Keras 3, .h5 from Keras 2): re-expressed for "
    "the profile's Keras inside its runtime and proved to match the original within 1e-5. Ends with `cbtool check`."
))  # fmt: skip
@click.argument("sources", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The zip to write.")
@profile_option("an2dl-2024")
@profiles_file_option
@click.option("--format", "fmt", type=Choice(list(FORMATS)), default="portable", show_default=True,
              help="portable: rebuild + weights.npz (any Keras); keras: model.keras; onnx: model.onnx + onnxruntime.")
@click.option("--tta", type=ChoiceList([*TTA_VIEWS, AUTO]), default="none", show_default=True,
              help="Test-time augmentation: deterministic numpy flips/rotations, softmax averaged. auto: the mode "
              "whose measured accuracy on --tta-data (clean and corrupted) is best; the manifest keeps the evidence. "
              "An ensemble takes one mode for every member or one per member (d4,flip,none).")
@click.option("--weights", "member_weights", default=None, metavar="W1,W2,...",
              help="An ensemble's member weights, in SOURCE order (normalised to sum 1) [default: equal].")
@click.option("--tta-data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --tta auto: validation npz (held out from training) the modes are scored on.")
@click.option("--tta-images", type=click.IntRange(min=1), default=DEFAULT_IMAGES, show_default=True,
              help="With --tta auto: score a seeded sample of this many --tta-data images.")
@click.option("--tta-shift", default=None, metavar="FAMILIES", help="With --tta auto: corruption families (severity 3) "
              f"scored besides the clean images, comma-separated, or none [default: {','.join(DEFAULT_SHIFT)}].")
@allow_pickle_option
@click.option("--fp16", is_flag=True, help="Store portable weights as float16 (about half the size).")
@click.option("--int8", is_flag=True, help="Per-channel int8 kernels (portable, dequantized by numpy in model.py) or an "
              "onnxruntime-quantized model.onnx: about a quarter of the size; the manifest records the argmax agreement "
              "with float32 on the probe images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per forward pass in predict (bounds memory).")
@click.option("--partial", is_flag=True, help="SOURCE is an unfinished (interrupted) run dir: use its best weights so "
              "far; the manifest records how far it got.")
@click.option("--from-keras", "from_keras", type=click.Path(exists=True, path_type=Path), default=None,
              help="A notebook's whole model (.keras or .h5) instead of SOURCE.")
@click.option("--preprocess", default=None, help="With --from-keras: the preprocessing it was trained with (raw, "
              "scale:1/255, scale:1/127.5,offset:-1, resize:224:bilinear, bgr, joined by +; or a numpy-only .py file).")
@click.option("--strip-augmentation", is_flag=True, help="With --from-keras: remove Random*/augmentation layers (proved pass-through).")
@click.option("--data", "probe_data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --from-keras: an npz whose first images are the parity probes (default: seeded random images).")
@click.option("--plan", "plan_images", type=click.IntRange(min=1), default=None, metavar="N", help="Before building, "
              "estimate the grader's total time for N images (import + load + N x the members' forward passes with "
              "their TTA views), timed in the profile's runtime on this machine (cached); refuse above the profile's "
              "time limit unless --force. The grader's machine may differ.")
@click.option("--force", is_flag=True, help="Write the zip even above the profile's size limit (or --plan's time "
              "limit); check then reports it as a warning.")
def build_command(out: Output, sources, output, profile_name, profiles_file, fmt, tta, member_weights, tta_data, tta_images,
                  tta_shift, allow_pickle, fp16, int8, batch_size, partial, from_keras, preprocess, strip_augmentation,
                  probe_data, plan_images, force) -> Result:
    from toolkit.errors import EXIT_ERROR, EXIT_OK
    from toolkit.runtime.profiles import get_profile
    from toolkit.submission.build import (BuildOptions, build_ensemble, build_submission, check_options,
                                          describe_budget)
    from toolkit.submission.check import render
    from toolkit.submission.from_keras import FromKerasOptions, build_from_keras
    from toolkit.submission.keras_target import describe_conversion
    from toolkit.submission.tta_auto import describe as describe_tta_choice

    if bool(sources) == (from_keras is not None) or (from_keras is not None) != (preprocess is not None):
        raise click.UsageError("pass SOURCE (an export or run dir; several for an ensemble), or --from-keras MODEL with "
                               "--preprocess SPEC")
    ensemble = len(sources) > 1
    if (len(tta) > 1 or member_weights is not None) and not ensemble:
        raise click.UsageError("--weights and one --tta mode per member are for an ensemble (several SOURCE dirs)")
    member_tta, tta = (tta if len(tta) > 1 else None), tta[0]
    if int8 and (fp16 or from_keras is not None):
        raise click.UsageError(f"--int8 and {'--fp16' if fp16 else '--from-keras'} are exclusive")
    if partial and from_keras is not None:
        raise click.UsageError("--partial takes the best weights of an unfinished run dir (SOURCE); drop it with --from-keras")
    # an ensemble refuses --tta auto itself (build_ensemble); its --tta-* options without auto are still refused here
    skip = ensemble and tta_data is None and tta_shift is None
    auto = None if skip else _auto_options(tta, tta_data, tta_images, tta_shift, allow_pickle, from_keras)
    profile = get_profile(profile_name, profiles_file)
    options = BuildOptions(fmt, tta, fp16, batch_size, partial, auto, member_tta=member_tta, int8=int8, force=force,
                           weights=_parse_weights(member_weights) if ensemble else None)
    if from_keras is None:
        check_options(sources, options)  # bad options and ensembles are refused before --plan's minutes of timing
    plan = _time_plan(out, list(sources) if plan_images else [], plan_images, profile, list(member_tta or [tta]), fmt,
                      batch_size, force, from_keras)
    if from_keras is not None:
        keras_options = FromKerasOptions(preprocess, strip_augmentation, probe_data, tta=tta, batch_size=batch_size,
                                         force=force)
        result = build_from_keras(from_keras, output, profile, keras_options, log=out.info)
    elif ensemble:
        result = build_ensemble(sources, output, profile, options, log=out.info)
    else:
        result = build_submission(sources[0], output, profile, options, log=out.info)
    result.plan = plan.to_dict() if plan else None
    files = ", ".join(f"{n} {f['bytes'] / 2**20:.2f} MiB" for n, f in result.manifest["files"].items())
    human = f"built {output} ({result.bytes / 2**20:.2f} MiB, sha256 {result.sha256[:12]}): {files}\n"
    human += describe_budget(result.budget) + "\n" if result.budget else ""
    human += (f"plan: about {plan.total_s:,.0f} s for {plan.n_images:,} images, {plan.time_limit_s:g} s this profile "
              f"assumes ({'within' if plan.within_limit else 'OVER, built because of --force'}); the grader's machine "
              "may differ\n") if plan else ""
    human += _int8_line(result.manifest)
    human += (describe_conversion(result.conversion) + "\n" if result.conversion else "")
    human += (describe_tta_choice(result.tta_choice) + "\n" if result.tta_choice else "") + render(result.check)
    return Result(data=_with_error(result.to_dict(), result.check), human=human,
                  exit_code=EXIT_OK if result.check.ok else EXIT_ERROR)


def _parse_weights(text: str | None) -> tuple[float, ...] | None:
    """--weights "2,1,1" -> (2.0, 1.0, 1.0); anything else is a usage error (exit 2)."""
    from toolkit.errors import UsageError

    if text is None:
        return None
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError:
        raise UsageError(f"--weights: expected comma-separated numbers (one per member), found {text!r}") from None


def _int8_line(manifest: dict) -> str:
    q = manifest.get("quantization")
    if not q:
        return ""
    return (f"int8 weights: argmax agreement with float32 {q['argmax_agreement']:.3f} on {q['n']} probe images, max abs "
            f"diff {q['max_abs_diff']:.2e} (floor {q['min_agreement']})\n")


def _time_plan(out: Output, sources: list, n_images: int | None, profile, tta: list[str], fmt: str,
               batch_size: int, force: bool, from_keras):
    """--plan N: the time plan of the members, printed before building; over the time limit it refuses unless --force."""
    from toolkit.errors import SubmissionError, UsageError
    from toolkit.submission.plan import describe, member_from_dir, over_limit_message, plan_submission

    if n_images is None:
        return None
    if from_keras is not None:
        raise UsageError("--plan times cbtool networks (SOURCE run or export dirs); it cannot plan --from-keras")
    if len(tta) not in (1, len(sources)):  # check_options refused it already; never plan other modes than built
        raise UsageError(f"--tta: expected one mode or one per member ({len(sources)}), found {len(tta)}")
    modes = ["d4" if m == AUTO else m for m in (tta if len(tta) == len(sources) else tta[:1] * len(sources))]
    # --tta auto chooses after the plan: plan the heaviest mode
    plan = plan_submission([member_from_dir(s, m, fmt) for s, m in zip(sources, modes)], n_images, profile, batch_size,
                           log=out.info)
    out.info(describe(plan) + (" (--tta auto: planned with d4, the heaviest mode)" if AUTO in tta else ""))
    if not plan.within_limit and not force:
        raise SubmissionError(over_limit_message(plan))
    return plan


def _auto_options(tta: str, data: Path | None, images: int, shift: str | None, allow_pickle: bool, from_keras):
    """--tta auto's options; its --tta-* options without it, or it without --tta-data, are usage errors (exit 2)."""
    from toolkit.errors import UsageError
    from toolkit.submission.tta_auto import AutoOptions, parse_shift

    if tta != AUTO:
        if data is not None or shift is not None:
            raise UsageError("--tta-data and --tta-shift choose the TTA mode: pass them with --tta auto")
        return None
    if from_keras is not None:
        raise UsageError("--tta auto measures a cbtool network (SOURCE); with --from-keras pass --tta none, flip or d4")
    if data is None:
        raise UsageError("--tta auto needs --tta-data VAL.npz: the validation images to score each mode on (a run "
                         "dir keeps no validation images; pass the --val file you trained with, or a held-out split)")
    return AutoOptions(data, images, parse_shift(shift), allow_pickle=allow_pickle)


@cbtool_command(main, "check", help="Static contract checks of a submission zip: layout, the contract's class and method signatures, undefined names (pyflakes), imports the runtime lacks, saved Keras models against what the runtime's Keras accepts, files opened by relative paths, size and unpacked size; no TensorFlow in this process. Exit 1 on an error; warnings alone exit 0.")
@click.argument("submission", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@profile_option(None)
@profiles_file_option
def check_command(out: Output, submission, profile_name, profiles_file) -> Result:
    from toolkit.errors import EXIT_ERROR, EXIT_OK
    from toolkit.submission.build import submission_profile
    from toolkit.submission.check import check_submission, render

    report = check_submission(submission, submission_profile(submission, profile_name, profiles_file))
    return Result(data=_with_error(report.to_dict(), report), human=render(report),
                  exit_code=EXIT_OK if report.ok else EXIT_ERROR)


def _with_error(data: dict, report) -> dict:
    """A failed check's JSON keeps `ok: false` and every finding, and adds the `error` object every failing command's
    JSON carries: kind "check", the first error as the message."""
    errors = [issue for issue in report.issues if issue.severity == "error"]
    if report.ok or not errors:
        return data
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return {**data, "error": {"type": "CheckFailed", "kind": "check", "message": errors[0].message + more,
                              "errors": len(errors)}}


@cbtool_command(main, "validate-preprocessing", help=(
    "Run SUBMISSION's own predict() in the profile's runtime, capture the tensor reaching the network's first layer, "
    "and compare it with the preprocessing the model was trained with: toolkit.preprocessing as in RUN_DIR's spec "
    "(--run, byte for byte) or a declared --preprocess SPEC (any zip, e.g. a hand-written model.py; needs --data). "
    "Diagnoses the usual bugs. Exit 3 on a mismatch."
))  # fmt: skip
@click.argument("submission", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--run", "run_dir", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The training run (or export) dir: preprocessing.json and probe.npz. An ensemble zip: once per "
              "member, in the manifest's order.")
@click.option("--preprocess", "spec_text", default=None, metavar="SPEC",
              help="Declared preprocessing: steps joined by '+' (raw, scale:1/255, scale:1/127.5,offset:-1, "
                   "resize:224:bilinear|nearest, bgr) or a numpy-only .py file defining preprocess(images).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An npz whose first images are used as probes instead of the run's probe.npz (required with --preprocess).")
@profile_option(None)
@profiles_file_option
@click.option("--images", "n_images", type=click.IntRange(min=1), default=16, show_default=True, help="Probe images taken from --data / probe.npz.")
@click.option("--allow-pickle", is_flag=True, help="Allow object arrays in --data (unpickling runs code; the 2023 string labels need it).")
def validate_command(out: Output, submission, run_dir, spec_text, data, profile_name, profiles_file, n_images,
                     allow_pickle) -> Result:
    from toolkit.errors import EXIT_OK, EXIT_SUBMISSION_FAILED
    from toolkit.submission.build import submission_profile
    from toolkit.submission.validate import render, validate_preprocessing

    if (not run_dir) == (spec_text is None):
        raise click.UsageError("expected exactly one of --run RUN_DIR (once per member for an ensemble) or --preprocess SPEC")
    if spec_text is not None and data is None:
        raise click.UsageError("--preprocess needs --data (an npz of probe images): there is no run probe")
    spec = _parse_spec(spec_text) if spec_text is not None else None
    report = validate_preprocessing(submission, list(run_dir) or None, submission_profile(submission, profile_name, profiles_file),
                                    spec=spec, data=data, n_images=n_images, allow_pickle=allow_pickle, log=out.info)
    return Result(data=report.to_dict(), human=render(report), exit_code=EXIT_OK if report.ok else EXIT_SUBMISSION_FAILED)


def _parse_spec(text: str):
    """--preprocess SPEC: a malformed step list is a bad option value (exit 2); a .py file's own faults stay exit 1."""
    from toolkit.errors import ConfigError, UsageError
    from toolkit.preprocess_spec import parse_spec

    try:
        return parse_spec(text)
    except ConfigError as exc:
        if text.strip().endswith(".py"):
            raise
        raise UsageError(str(exc)) from None
