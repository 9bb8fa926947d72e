"""`cbtool validate-preprocessing`: prove a submission feeds its network what its model was trained on.

The submission's own predict() runs in the sandbox (the one loader) with capture on; the tensor reaching the
network's first layer is compared with what the parent computes for the same probe images: training's
`toolkit.preprocessing.preprocess` (`--run`, byte for byte), or a declared `--preprocess SPEC`
(`toolkit.preprocess_spec`; equal within float rounding, since a hand-written `x * (1/255)` and the declared
`x / 255` differ in the last bit, and tf.image.resize and cbtool's resize in the 4th decimal). With TTA the
identity view (the first call of every batch) is compared.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from toolkit.artifacts import RunDir
from toolkit.errors import ConfigError, SubmissionError, UsageError
from toolkit.fsutil import sha256_file
from toolkit.results import Result
from toolkit.runtime.profiles import Profile
from toolkit.tta import IDENTITY_VIEW, TTA_VIEWS

if TYPE_CHECKING:
    from toolkit.preprocess_spec import PreprocessSpec

SPEC_TOLERANCE = 1e-6  # relative to the tensor's largest magnitude: a few float32 ulps, far below any real bug
# Another library's bilinear resize (tf.image.resize 96 -> 224) differs from cbtool's by 0.0017 on 0-255 (measured):
# float32 sampling positions. A wrong method, size or antialiasing differs by whole grey levels.
RESIZE_TOLERANCE = 1e-4


@dataclass
class ValidationReport(Result):
    """What validate-preprocessing found: `ok` when every probe input reached the network as expected (byte-identical
    to training for `--run`; within `tolerance` of the declared spec for `--preprocess`)."""

    ok: bool
    zip: str
    run: str | None
    profile: str
    input_size: int
    resize: str | None
    tta_views: int
    capture_target: str | None
    source: dict
    inputs: list[dict] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    failure: dict | None = None
    timing: dict = field(default_factory=dict)
    preprocess_spec: dict | None = None
    tolerance: float = 0.0
    members: list[dict] | None = None  # an ensemble: per member {name, run, variant, input_size, resize, tta_views, ok}


@dataclass(frozen=True)
class Expected:
    """What the network should receive for raw probe images: `fn`, who says so (`label`, `reference`), and for
    diagnosis the look-alikes (`resize_alternatives`: method -> fn) and why an extra /255 is wrong here (`note`)."""

    fn: Callable[[np.ndarray], np.ndarray]
    label: str
    reference: str
    note: str
    resize: str | None = None
    resize_alternatives: dict = field(default_factory=dict)
    tolerance: float = 0.0


def training_expected(size: int, resize: str) -> Expected:
    """Training's preprocessing (toolkit/preprocessing.py at `size`, `resize`), compared byte for byte."""
    from toolkit.preprocessing import RESIZE_METHODS, preprocess

    others = {m: (lambda x, m=m: preprocess(x, size, m)) for m in RESIZE_METHODS if m != resize}
    return Expected(lambda x: preprocess(x, size, resize), "training", "toolkit/preprocessing.py",
                    "ConvNeXt normalises inside the network: values must stay 0-255", resize, others)


def spec_expected(spec: PreprocessSpec) -> Expected:
    """A declared `PreprocessSpec`, compared within float32 rounding (and a resize's arithmetic when it resizes)."""
    from toolkit.preprocess_spec import resize_method, resize_variants

    others = {m: v.apply for m, v in resize_variants(spec).items()}
    return Expected(spec.apply, "the declared preprocessing", f"--preprocess {spec.text}",
                    f"the declared preprocessing is {spec.text!r}", resize_method(spec), others,
                    SPEC_TOLERANCE if spec.input_size is None else RESIZE_TOLERANCE)


def validate_preprocessing(zip_path: str | os.PathLike, run_dir: str | os.PathLike | None, profile: Profile, *,
                           spec: PreprocessSpec | None = None, data: str | os.PathLike | None = None,
                           n_images: int = 16, allow_pickle: bool = False,
                           log: Callable[[str], None] | None = None) -> ValidationReport:
    """Run the submission with capture and compare with training's preprocessing (`run_dir`) or a declared
    `spec` (needs `data`); exactly one of the two. Return the report."""
    from toolkit.runtime.sandbox import run_submission
    from toolkit.submission_zip import SubmissionZip

    if (not run_dir) == (spec is None):
        raise ConfigError("validate-preprocessing: expected exactly one of --run or --preprocess; found "
                          + ("both" if spec is not None else "neither"))
    runs = list(run_dir) if isinstance(run_dir, (list, tuple)) else ([run_dir] if run_dir is not None else [])
    with SubmissionZip(zip_path) as sub:
        members = sub.manifest.get("members") if isinstance(sub.manifest.get("members"), list) else None
    if members is not None or len(runs) > 1:
        return _validate_ensemble(Path(zip_path), [RunDir(r) for r in runs], members, profile, spec, data, n_images,
                                  allow_pickle, log)
    run_dir = runs[0] if runs else None
    zip_path, run = Path(zip_path), (RunDir(run_dir) if run_dir is not None else None)
    prep = run.read_json(run.preprocessing, SubmissionError) if run is not None else {}
    images, labels = _probe_images(run, data, n_images, allow_pickle)
    inputs = probe_inputs(images, profile.contract.dtypes)
    with SubmissionZip(zip_path) as sub:
        model_py, manifest = sub.model_py or "", sub.manifest
    if spec is None:
        expected = training_expected(int(prep.get("input_size", 96)), str(prep.get("resize", "bilinear")))
        source = source_hashes(model_py, prep)
    else:
        expected, source = spec_expected(spec), spec_source_hashes(model_py, manifest, spec)
    tensors = {name: expected.fn(x) for name, x in inputs.items()}
    views = int(manifest.get("tta_views") or TTA_VIEWS.get(str(manifest.get("tta")), 1))
    outcome = run_submission(zip_path, profile, inputs, capture_input=True, log=log, fit_data=(images, labels),
                             cwd=profile.contract.run_dir)
    report = ValidationReport(ok=False, zip=str(zip_path), run=str(run) if run else None, profile=profile.name,
                              input_size=int(next(iter(tensors.values())).shape[1]), resize=expected.resize,
                              tta_views=views, capture_target=outcome.capture_target, source=source,
                              timing=outcome.timing, preprocess_spec=spec.to_dict() if spec else None,
                              tolerance=expected.tolerance)
    return _judge(report, outcome, inputs, tensors, expected)


def _validate_ensemble(zip_path: Path, runs: list[RunDir], members: list[dict] | None, profile: Profile, spec, data,
                       n_images: int, allow_pickle: bool, log) -> ValidationReport:
    """An ensemble zip: one run (or export) dir per member, in the manifest's order; each network's identity-view
    captures compared byte for byte with its own training preprocessing (input size, resize), its views counted with
    its own TTA. The submission runs once; every network is captured (the sandbox wraps each one)."""
    from toolkit.runtime.sandbox import run_submission
    from toolkit.submission_zip import SubmissionZip

    if spec is not None:
        raise ConfigError(f"{zip_path}: an ensemble of cbtool networks: validate it against its members' runs "
                          "(--run once per member), not a declared --preprocess")
    if members is None:
        raise ConfigError(f"{zip_path}: --run given {len(runs)} times, but the zip's manifest lists no ensemble members")
    listing = ", ".join(f"{m.get('name')} ({(m.get('model') or {}).get('variant')} at "
                        f"{(m.get('preprocessing') or {}).get('input_size')} px)" for m in members)
    if len(runs) != len(members):
        raise UsageError(f"{zip_path}: an ensemble of {len(members)} members; expected --run once per member in the "
                          f"manifest's order ({listing}), found {len(runs)}")
    preps = []
    for index, (run, member) in enumerate(zip(runs, members), 1):
        prep = run.read_json(run.preprocessing, SubmissionError)
        spec_file = run.read_json(run.model_spec, SubmissionError)
        want = (member.get("model") or {}).get("variant"), (member.get("preprocessing") or {}).get("input_size")
        found = spec_file.get("variant"), prep.get("input_size")
        probe_sha = sha256_file(run.probe) if run.probe.is_file() else None  # the run's own probe images
        if tuple(want) == tuple(found) and None not in (probe_sha, member.get("probe_sha256")) \
                and probe_sha != member["probe_sha256"]:
            raise UsageError(f"--run #{index} ({run.path}) is {found[0]} at {found[1]} px like {member.get('name')}, "
                             f"but not the run it was built from (its {run.probe.name} differs from the one the "
                             f"manifest records): pass the runs in the manifest's member order ({listing})")
        if tuple(want) != tuple(found):
            raise UsageError(f"--run #{index} ({run.path}) is {found[0]} at {found[1]} px, but {member.get('name')} is "
                              f"{want[0]} at {want[1]} px: pass the runs in the manifest's member order ({listing})")
        preps.append(prep)
    images, labels = _probe_images(runs[0], data, n_images, allow_pickle)
    inputs = probe_inputs(images, profile.contract.dtypes)
    with SubmissionZip(zip_path) as sub:
        model_py = sub.model_py or ""
    expected = [training_expected(int(p.get("input_size", 96)), str(p.get("resize", "bilinear"))) for p in preps]
    outcome = run_submission(zip_path, profile, inputs, capture_input=True, log=log, fit_data=(images, labels),
                             cwd=profile.contract.run_dir)
    sources = [source_hashes(model_py, p) for p in preps]
    report = ValidationReport(ok=False, zip=str(zip_path), run=", ".join(str(r.path) for r in runs), profile=profile.name,
                              input_size=int(preps[0].get("input_size", 96)), resize=expected[0].resize,
                              tta_views=int(members[0].get("tta_views") or 1), capture_target=outcome.capture_target,
                              source=_merged_sources(sources), timing=outcome.timing, members=[])
    if outcome.failure is not None and not any(outcome.captured_calls.values()):
        report.failure = outcome.failure.to_dict()
        report.diagnoses = _diagnose_failure(outcome.failure.message, report.input_size, "training")
        return report
    for index, (run, member, exp) in enumerate(zip(runs, members, expected)):
        views = int(member.get("tta_views") or 1)
        items = []
        for name, x in inputs.items():
            nets = outcome.captured_by_net.get(name) or []
            calls = (nets[index] if index < len(nets) else [])[IDENTITY_VIEW::views]
            item = compare_input(name, x, calls, exp.fn(x), exp)
            item["member"] = member.get("name")
            items.append(item)
        report.inputs += items
        report.members.append({"name": member.get("name"), "run": str(run.path), "variant": (member.get("model") or {}).get("variant"),
                               "input_size": exp.fn(inputs[next(iter(inputs))][:1]).shape[1], "resize": exp.resize,
                               "tta_views": views, "ok": all(i["match"] for i in items),
                               "identical": all(i["identical"] for i in items), "source": sources[index]["message"]})
    report.diagnoses = _unique(f"{i['member']}: {d}" for i in report.inputs for d in i["diagnosis"])
    if outcome.failure is not None:
        report.failure = outcome.failure.to_dict()
    if report.source["match"] is False:
        report.diagnoses.append(report.source["message"])
    report.ok = report.source["match"] is not False and report.failure is None and all(m["ok"] for m in report.members)
    return report


def _merged_sources(sources: list[dict]) -> dict:
    """The members' source-hash checks as one: a mismatch if any member's mismatches."""
    bad = [s for s in sources if s["match"] is False]
    if bad:
        return {**bad[0], "message": bad[0]["message"]}
    matched = all(s["match"] for s in sources)
    return {**sources[0], "match": True if matched else sources[0]["match"],
            "message": (f"embedded preprocessing source matches training's for all {len(sources)} members" if matched
                        else sources[0]["message"])}


def _judge(report: ValidationReport, outcome, inputs: dict, tensors: dict, expected: Expected) -> ValidationReport:
    """Fill `report` from the run: the identity-view captures per input against `tensors`, failure, source hashes."""
    if outcome.failure is not None and not any(outcome.captured_calls.values()):
        report.failure = outcome.failure.to_dict()
        report.diagnoses = _diagnose_failure(outcome.failure.message, report.input_size, expected.label)
        return report
    for name, x in inputs.items():
        calls = (outcome.captured_calls.get(name) or [])[IDENTITY_VIEW::report.tta_views]
        report.inputs.append(compare_input(name, x, calls, tensors[name], expected))
    report.diagnoses = _unique(d for item in report.inputs for d in item["diagnosis"])
    if outcome.failure is not None:
        report.failure = outcome.failure.to_dict()
    source_ok = report.source["match"] is not False
    if not source_ok:
        report.diagnoses.append(report.source["message"])
    report.ok = source_ok and report.failure is None and all(item["match"] for item in report.inputs)
    return report


def probe_inputs(images: np.ndarray, dtypes: tuple[str, ...] = ("uint8", "float32")) -> dict[str, np.ndarray]:
    """The probe set in each dtype the contract feeds: the images, all-0 and all-255 edge cases, and (float) values
    with fractions; a 2023-style float32-only contract is never fed uint8."""
    h, w = images.shape[1:3]
    rng = np.random.default_rng(0)
    out = {}
    for dtype in dtypes:
        out[f"probe_{dtype}"] = images.astype(dtype)
    first = dtypes[0]
    out[f"zeros_{first}"] = np.zeros((2, h, w, 3), first)
    out[f"full_{first}"] = np.full((2, h, w, 3), 255, first)
    floats = [d for d in dtypes if d.startswith("float")]
    if floats:
        noise = rng.uniform(-0.5, 0.5, images.shape)
        out[f"fractional_{floats[0]}"] = np.clip(images.astype(np.float64) + noise, 0, 255).astype(floats[0])
    return out


def compare_input(name: str, x: np.ndarray, calls: list[np.ndarray], expected: np.ndarray, exp: Expected) -> dict:
    """Compare the identity-view captures for one input with `expected` (= `exp.fn(x)`)."""
    item = {"input": name, "dtype": str(x.dtype), "shape": list(x.shape), "identical": False, "match": False,
            "first_difference": None, "diagnosis": []}
    if not calls:
        item["diagnosis"].append("no tensor reached the network's first layer (capture found nothing to wrap?)")
        return item
    shapes = {c.shape[1:] for c in calls}
    if len(shapes) != 1:
        item["diagnosis"].append(f"the network received batches of different image shapes {sorted(shapes)}")
        return item
    found = np.concatenate(calls, axis=0)
    item.update(found_shape=list(found.shape), found_dtype=str(found.dtype))
    if found.shape == expected.shape and found.dtype == expected.dtype:
        item["identical"] = found.tobytes() == expected.tobytes()
        diff = float(np.max(np.abs(found.astype(np.float64) - expected), initial=0.0))
        item["max_abs_diff"] = diff
        scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
        item["match"] = item["identical"] or diff <= exp.tolerance * scale
        if item["match"]:
            return item
    item["first_difference"] = _first_difference(expected, found)
    item["diagnosis"] = diagnose(x, expected, found, exp)
    return item


def diagnose(x: np.ndarray, expected: np.ndarray, found: np.ndarray, exp: Expected) -> list[str]:
    """Name the usual causes of a mismatch: /255, /127.5-1 (extra or missing), BGR, resize method or size, dtype."""
    label = exp.label
    if found.shape[0] != expected.shape[0]:
        return [f"batch: the network received {found.shape[0]} images for {expected.shape[0]} inputs (an extra view or a dropped batch)"]
    if found.shape[1:3] != expected.shape[1:3]:
        return [f"resize size: {label} fed {expected.shape[1]}x{expected.shape[2]}, "
                f"the submission fed {found.shape[1]}x{found.shape[2]}"]
    if found.shape != expected.shape:
        return [f"shape: {label} fed {expected.shape}, the submission fed {found.shape}"]
    out = []
    if found.dtype != expected.dtype:
        out.append(f"dtype: the network received {found.dtype}, {label} fed {expected.dtype}")
    f, e = found.astype(np.float64), expected.astype(np.float64)
    cause = _scaling_cause(f, e, exp)
    if cause:
        return out + cause
    for other, fn in exp.resize_alternatives.items():
        if np.allclose(f, fn(x), atol=1e-4):
            return out + [f"resize method: the submission resized with {other!r}, {label} used {exp.resize!r}"]
    for name, cast in (("truncated", np.trunc), ("rounded", np.round), ("floored", np.floor)):
        before = exp.fn(cast(np.asarray(x, np.float64)).astype(np.float32))  # cast on the way in
        if np.array_equal(f, cast(e)) or np.array_equal(f, before):
            return out + [f"dtype: values {name} to integers "
                          f"(a cast to uint8/int in predict; {label} keeps float32 fractions)"]
    if np.array_equal(f, e.astype(np.float16).astype(np.float64)):
        return out + [f"dtype: values rounded to float16 precision ({label} feeds float32)"]
    diff = np.abs(f - e)
    return out + [f"values differ (max abs diff {diff.max():.4g}, mean {diff.mean():.4g}), not one of the usual causes "
                  f"(/255, /127.5-1, BGR, resize, dtype): compare predict() with {exp.reference}"]


def _scaling_cause(f: np.ndarray, e: np.ndarray, exp: Expected) -> list[str]:
    """An extra or missing /255 or /127.5-1, and/or reversed channels, that turns `e` into `f`."""
    scalings = {"": lambda v: v, f"an extra /255 ({exp.note})": lambda v: v / 255.0,
                f"an extra /127.5 - 1 ({exp.note})": lambda v: v / 127.5 - 1.0,
                f"a missing /255 ({exp.label} divides by 255, the submission does not)": lambda v: v * 255.0,
                f"a missing /127.5 - 1 ({exp.label} maps to -1..1, the submission does not)": lambda v: (v + 1.0) * 127.5}
    for text, scale in scalings.items():
        for flip in (False, True):
            v = scale(e)
            v = v[..., ::-1] if flip else v
            if (text or flip) and np.allclose(f, v, rtol=1e-5, atol=1e-5):
                return [c for c in (text, "channels reversed (RGB <-> BGR)" if flip else "") if c]
    return []


_FOUND_SHAPE = re.compile(r"found shape=\((?:None|\d+), (\d+), (\d+), (\d+)\)")


def _diagnose_failure(message: str, size: int, label: str = "training") -> list[str]:
    """Nothing was captured: the network rejected its input (e.g. Keras' shape check) or predict failed earlier."""
    match = _FOUND_SHAPE.search(message)
    if match and (int(match.group(1)), int(match.group(2))) != (size, size):
        return [f"resize size: {label} fed {size}x{size}, the submission fed {match.group(1)}x{match.group(2)} "
                f"(the network rejected it: {message})"]
    return [f"the submission failed before any tensor reached its network: {message}"]


def source_hashes(model_py: str, prep: dict) -> dict:
    """The embedded preprocessing block's sha256 vs the run's recorded source_sha256."""
    from toolkit.provenance import preprocessing_sha256

    run_sha = prep.get("source_sha256")
    info = _block_hashes(model_py, "preprocessing.py")
    info.update(run_sha256=run_sha, toolkit_sha256=preprocessing_sha256())
    if info["embedded_sha256"] is None:
        info["message"] = "model.py has no embedded toolkit/preprocessing.py block: source hashes not compared"
    elif run_sha is None:
        info["message"] = "the run's preprocessing.json records no source_sha256: source hashes not compared"
    else:
        info["match"] = info["embedded_sha256"] == run_sha == info["marker_sha256"]
        info["message"] = ("embedded preprocessing source matches training's" if info["match"] else
                           f"source: the embedded preprocessing block {_hash_pair(info)}, training recorded "
                           f"{run_sha[:12]}: the block was edited or comes from another cbtool")
    return info


def spec_source_hashes(model_py: str, manifest: dict, spec: PreprocessSpec) -> dict:
    """When the manifest records a preprocess spec: its embedded block's sha256 vs the declared spec's."""
    recorded = manifest.get("preprocess_spec") if isinstance(manifest.get("preprocess_spec"), dict) else None
    name = str((recorded or {}).get("name") or spec.name)
    info = _block_hashes(model_py, name)
    info.update(spec_sha256=spec.sha256(), manifest_sha256=(recorded or {}).get("sha256"))
    if recorded is None:
        info["message"] = "the zip's manifest records no preprocess_spec: source hashes not compared (the tensor is)"
    elif info["embedded_sha256"] is None:
        info["match"] = False
        info["message"] = f"source: the manifest records preprocess spec block {name}, model.py embeds none"
    else:
        info["match"] = info["embedded_sha256"] == info["marker_sha256"] == spec.sha256() == info["manifest_sha256"]
        info["message"] = (f"embedded {name} matches --preprocess {spec.text}" if info["match"] else
                           f"source: the embedded {name} {_hash_pair(info)}, the manifest records "
                           f"{str(info['manifest_sha256'])[:12]} ({recorded.get('text')!r}), --preprocess "
                           f"{spec.text} hashes to {spec.sha256()[:12]}: the block was edited or the zip declares "
                           "other preprocessing")
    return info


def _block_hashes(model_py: str, name: str) -> dict:
    from toolkit.submission.render import extract_blocks

    block = extract_blocks(model_py).get(name)
    return {"embedded_sha256": block["sha256_body"] if block else None,
            "marker_sha256": block["sha256_marker"] if block else None, "match": None, "message": ""}


def _hash_pair(info: dict) -> str:
    return f"hashes to {info['embedded_sha256'][:12]} (marker says {info['marker_sha256'][:12]})"


def render(report: ValidationReport) -> str:
    """Human text for a validation report."""
    label = "training" if report.preprocess_spec is None else "declared"
    against = report.run if report.preprocess_spec is None else f"--preprocess {report.preprocess_spec['text']}"
    head = f"{report.zip} vs {against} in {report.profile} (capture: {report.capture_target})"
    if report.members:
        return _render_members(report)
    if report.ok:
        ref = "training" if report.preprocess_spec is None else "the declared preprocessing"
        worst = max((i.get("max_abs_diff", 0.0) for i in report.inputs), default=0.0)
        how = (f"byte-identical to {ref}" if all(i["identical"] for i in report.inputs) else
               f"equal to {ref} within float rounding (max abs diff {worst:.3g})")
        return f"ok: preprocessing {how} on {len(report.inputs)} probe sets; {report.source['message']}\n  {head}"
    lines = [f"MISMATCH: {head}"]
    for item in report.inputs:
        if item["match"]:
            lines.append(f"  {item['input']:<20} {'identical' if item['identical'] else 'equal within float rounding'}")
            continue
        diff = item["first_difference"]
        where = (f" first difference at {diff['index']}: {label} {diff['expected']!r}, submission {diff['found']!r}"
                 if diff else "")
        lines.append(f"  {item['input']:<20} differs;{where}")
    lines += [f"  diagnosis: {d}" for d in report.diagnoses]
    if report.failure:
        lines.append(f"  the submission failed: [{report.failure['kind']}] {report.failure['message']}")
    return "\n".join(lines)


def _render_members(report: ValidationReport) -> str:
    """An ensemble's report: one line per member (its network's captures against its own run), then diagnoses."""
    ok = sum(m["ok"] for m in report.members)
    head = (f"{'ok' if report.ok else 'MISMATCH'}: {ok} of {len(report.members)} ensemble members fed exactly what "
            f"their training computed; {report.source['message']}\n  {report.zip} in {report.profile} (capture: "
            f"{report.capture_target})")
    lines = [head]
    for m in report.members:
        how = ("byte-identical" if m["identical"] else "equal within float rounding") if m["ok"] else "DIFFERS"
        lines.append(f"  {m['name']:<9} {str(m['variant']):<22} {m['input_size']:>4} px {m['resize']:<9} "
                     f"{m['tta_views']} view(s)  {how} on {len(report.inputs) // len(report.members)} probe sets  "
                     f"(vs {m['run']})")
    lines += [f"  diagnosis: {d}" for d in report.diagnoses]
    if report.failure:
        lines.append(f"  the submission failed: [{report.failure['kind']}] {report.failure['message']}")
    return "\n".join(lines)


def _first_difference(expected: np.ndarray, found: np.ndarray) -> dict | None:
    if expected.shape != found.shape:
        return None
    bad = np.argwhere(expected.astype(np.float64) != found.astype(np.float64))
    if not len(bad):  # same values, different dtype
        return {"index": [0] * expected.ndim, "expected": float(expected.flat[0]), "found": float(found.flat[0])}
    index = tuple(int(i) for i in bad[0])
    return {"index": list(index), "expected": float(expected[index]), "found": float(found[index])}


def _probe_images(run: RunDir | None, data: str | os.PathLike | None, n: int,
                  allow_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first n images of --data (refusing pickled arrays unless allowed), else the run's probe.npz; with labels
    (zeros where none are known) for a contract that calls fit(X, y)."""
    if data is None and run is None:
        raise ConfigError("validate-preprocessing --preprocess: expected --data (an npz of images to probe); found none")
    if data is not None:
        from toolkit.data.io import load_dataset

        dataset = load_dataset(data, allow_pickle=allow_pickle)
        images, labels = dataset.images, dataset.labels
    else:
        if not run.probe.is_file():
            raise SubmissionError(f"{run.path}: no {run.probe.name}; pass --data with images to probe")
        with np.load(run.probe, allow_pickle=False) as probe:
            images = probe["images"]
            labels = probe["labels"] if "labels" in probe.files else np.zeros(len(images), np.int64)
    if images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise SubmissionError(f"probe images: expected (N, H, W, 3) with N > 0, found {images.shape}")
    return np.asarray(images[:n]), np.asarray(labels[:n]).reshape(-1).astype(np.int64)


def _unique(items) -> list[str]:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
