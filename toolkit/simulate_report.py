"""The simulate report directory: scores.json, details.json, PNG pictures and one self-contained HTML page.

- scores.json: Codabench's scoring-file form, a flat {"accuracy": ...} object (only when the submission ran).
- details.json: everything simulate measured, with versions and timings.
- confusion_matrix.png; gradcam.png (misclassified held-out images with Grad-CAM, cbtool-built portable/keras zips);
  with --shift corruption_severity.png (the accuracy heat map) and corruption_strip.png (one image, every corruption).
- report.html: one file, images inlined as base64, readable offline and attachable to an issue.

The terminal text (`render_text`) and the HTML page (`render_html`) both render `tables(result)`, one table model:
a new measurement is one new row or `Table` there, and shows in both.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from toolkit.fsutil import atomic_open, write_json
from toolkit.results import chance_level, chance_warning
from toolkit.runtime.simulate import SimulateResult
from toolkit.simulate_pictures import heat_range, plot_shift

__all__ = ["codabench_scores", "plot_shift", "render_html", "render_text", "tables", "write_report", "Table"]

SCORES_FILE = "scores.json"
DETAILS_FILE = "details.json"
CONFUSION_PNG = "confusion_matrix.png"
SHIFT_PNG = "corruption_severity.png"
STRIP_PNG = "corruption_strip.png"
GRADCAM_PNG = "gradcam.png"
HTML_FILE = "report.html"


def codabench_scores(result: SimulateResult) -> dict:
    """The flat leaderboard object Codabench's scoring program writes to scores.json."""
    scores = result.scores or {}
    out = {key: float(scores[key]) for key in ("accuracy", "balanced_accuracy", "macro_f1") if key in scores}
    if result.shift:
        out["shift_mean_accuracy"] = float(result.shift["mean_accuracy"])
    return out


def write_report(result: SimulateResult, out_dir: str | Path, allow_pickle: bool = False) -> dict[str, str]:
    """Write the report files for one simulate result; return {what: path} (also set as `result.report`).

    The pictures of held-out images re-read `result.data` (`allow_pickle` as simulate was given it)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    scores = result.scores
    if result.ok and scores:
        write_json(out_dir / SCORES_FILE, codabench_scores(result))
        paths["scores"] = str(out_dir / SCORES_FILE)
    if scores and scores.get("confusion_matrix"):
        from toolkit.train.metrics import plot_confusion_matrix

        plot_confusion_matrix(scores["confusion_matrix"], scores["class_names"], out_dir / CONFUSION_PNG, title="Held-out confusion matrix")
        paths["confusion_matrix"] = str(out_dir / CONFUSION_PNG)
    if result.shift:
        plot_shift(result.shift, out_dir / SHIFT_PNG, _chance(result))
        paths["corruption_plot"] = str(out_dir / SHIFT_PNG)
    notes = _pictures(result, out_dir, allow_pickle, paths)
    paths["details"] = str(out_dir / DETAILS_FILE)
    paths["html"] = str(out_dir / HTML_FILE)
    result.report = paths
    write_json(out_dir / DETAILS_FILE, result.to_dict())
    with atomic_open(out_dir / HTML_FILE, "w", encoding="utf-8") as handle:
        handle.write(render_html(result, out_dir, notes))
    return paths


def _pictures(result: SimulateResult, out_dir: Path, allow_pickle: bool, paths: dict[str, str]) -> dict[str, str]:
    """The pictures of held-out images (Grad-CAM sheet, corruption strip); returns {section: note} for what is missing."""
    from toolkit import simulate_pictures as pictures

    if not result.scores and not result.shift:
        return {}
    heldout, why = pictures.safe_heldout(result, allow_pickle)
    if heldout is None:
        return {"per_class": why}
    notes: dict[str, str] = {}
    # A picture that cannot be drawn (no TensorFlow here, a .keras this Keras cannot load) is a note in the report,
    # never a lost report: the run it describes already happened.
    if result.shift:
        try:
            pictures.corruption_strip(heldout.images, list(result.shift["table"]), out_dir / STRIP_PNG,
                                      seed=int(result.shift.get("seed") or 0))
            paths["corruption_strip"] = str(out_dir / STRIP_PNG)
        except Exception as exc:  # noqa: BLE001 - see above
            notes["shift"] = f"corruption strip skipped: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if result.scores:
        try:
            sheet = pictures.gradcam_sheet(result, heldout, out_dir / GRADCAM_PNG)
        except Exception as exc:  # noqa: BLE001 - see above
            notes["per_class"] = f"Grad-CAM sheet skipped: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        else:
            if sheet.path:
                paths["gradcam"] = sheet.path
            else:
                notes["per_class"] = sheet.note
    return notes


# --- the table model: what both the terminal and the HTML page show ------------------------------------------


@dataclass
class Table:
    """One titled table of a simulate result; `intro` above it, `notes` below it. `html_only` tables stay off the terminal."""

    key: str
    title: str
    header: list[str]
    rows: list[list]
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    html_notes: list[str] = field(default_factory=list)  # longer explanations the page has room for
    html_only: bool = False
    heat: tuple[float, float] | None = None  # (red, green) accuracies: the page colours each percentage cell between


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


def _points(delta) -> str:
    """An accuracy difference in percentage points, signed: "+1.60 points", "-3.20 points" (never a "drop" of -x%)."""
    if delta is None:
        return "n/a"
    points = round(100 * float(delta), 2)
    return "0.00 points" if points == 0 else f"{points:+.2f} points"  # never "-0.00"


def _chance(result: SimulateResult) -> float | None:
    """The chance level simulate recorded, else the majority-class rate of the scored labels (per-class support)."""
    if result.chance_level is not None or not result.scores:  # None: a details.json from before chance levels
        return result.chance_level
    support = [c["support"] for c in result.scores["per_class"].values()]
    return chance_level(np.repeat(np.arange(len(support)), support), len(support))


def verdict(result: SimulateResult) -> tuple[str, str]:
    """(word, css class) of the status line: an OK whose accuracy is near chance reads NEAR CHANCE, never a green OK."""
    if result.ok and result.near_chance:
        return "NEAR CHANCE", "nearchance"
    return result.status.upper(), result.status


def tables(result: SimulateResult) -> list[Table]:
    """The result's tables, in display order: scores, ensemble members, time and memory, per class, corruption suite,
    TTA, versions."""
    out = [t for t in (_scores_table(result), _members_table(result), _timing_table(result), _per_class_table(result),
                       _shift_table(result), _tta_table(result)) if t]
    if result.versions:
        out.append(Table("versions", "Versions", ["component", "version"], [list(r) for r in sorted(result.versions.items())], html_only=True))
    return out


def _scores_table(result: SimulateResult) -> Table | None:
    scores, shift = result.scores, result.shift
    if not scores:
        return None
    rows = [["accuracy", _pct(scores["accuracy"])], ["balanced accuracy", _pct(scores["balanced_accuracy"])],
            ["macro F1", _pct(scores["macro_f1"])]]
    rows += [[f"accuracy, X fed as {dtype}", _pct(acc)] for dtype, acc in (result.scores_by_input or {}).items()]
    chance = _chance(result)
    if chance is not None:
        rows.append(["chance level (always the most frequent class)", _pct(chance)])
    if shift:
        rows += [["shifted mean accuracy", _pct(shift["mean_accuracy"])],
                 ["shifted mean vs clean", _points(shift["mean_accuracy"] - shift["clean_accuracy"])]]
    notes = []
    if result.near_chance:
        notes.append(chance_warning("accuracy", scores["accuracy"], chance))
    return Table("scores", "Scores", ["metric", "value"], rows, notes=notes)


_TIMING_LABELS = {
    "import_s": "import model.py",
    "load_s": "load the model",
    "fit_s": "fit (the contract calls it)",
    "grader_pass_s": "the grader's own pass (judged against the limit)",
    "clean_predict_s": "predict the held-out set (every dtype)",
    "probes_predict_s": "simulate's extra probes",
    "shift_predict_s": "predict the corrupted sets",
    "shift_corrupt_s": "make the corrupted sets",
    "tta_compare_predict_s": "predict under the other TTA modes (--compare-tta)",
    "members_predict_s": "predict by each ensemble member alone",
    "wall_s": "wall time, whole run",
}


def _timing_table(result: SimulateResult) -> Table | None:
    timing = result.timing or {}
    if not timing:
        return None
    rows = [[label, f"{timing[key]:.2f} s"] for key, label in _TIMING_LABELS.items() if timing.get(key) is not None]
    if timing.get("images_per_s") is not None:
        rows.append(["images per second", f"{timing['images_per_s']:.1f}"])
    # one number: the grader's own predict pass per image (result.images_within_time_limit); older details.json files
    # carried timing.images_within_limit instead
    fits = result.images_within_time_limit if result.images_within_time_limit is not None else timing.get("images_within_limit")
    if result.predict_s_per_image is not None:
        rows.append(["predict per image (TTA and members included)", f"{result.predict_s_per_image:.4f} s"])
    if fits is not None:
        rows.append(["images the time limit allows at this rate", f"{fits:,}"])
    if result.peak_memory_mb is not None:
        rows.append(["peak memory (MB)", f"{result.peak_memory_mb:.0f}"])
    notes = []
    limits = result.limits or {}
    if limits:
        notes.append(f"limits: {limits.get('time_limit_s'):g} s for the grader's own pass (import + load + fit + one predict "
                     f"of the held-out set); {limits.get('memory_limit_mb')} MB resident memory (a budget that approximates "
                     "the grader: the child is killed above it)")
    if fits is not None:
        notes.append(f"at this rate the time limit allows about {fits:,} images in predict after import and load (on "
                     f"this machine; the grader's may be slower): the {limits.get('time_limit_s'):g} s this profile assumes")
    html_notes = [limits["note"]] if limits.get("note") else []
    return Table("timing", "Time and memory", ["measure", "value"], rows, notes=notes, html_notes=html_notes)


def _per_class_table(result: SimulateResult) -> Table | None:
    if not result.scores:
        return None
    rows = [[n, _pct(c["precision"]), _pct(c["recall"]), _pct(c["f1"]), c["support"]] for n, c in result.scores["per_class"].items()]
    return Table("per_class", "Per class", ["class", "precision", "recall", "F1", "support"], rows)


def _shift_table(result: SimulateResult) -> Table | None:
    shift = result.shift
    if not shift:
        return None
    severities = [str(s) for s in shift["severities"]]
    seen = shift.get("seen_in_training") or {}
    clean = shift["clean_accuracy"]
    rows = [[name, *(_pct(per.get(s)) for s in severities), _pct(shift["per_corruption_mean"][name]),
             _points(shift["per_corruption_mean"][name] - clean), _SEEN[seen.get(name)]] for name, per in shift["table"].items()]
    intro = (f"Clean accuracy {_pct(clean)}; mean over {len(rows)} corruptions x {len(severities)} severities "
             f"{_pct(shift['mean_accuracy'])} ({_points(shift['mean_accuracy'] - clean)} vs clean); worst: "
             f"{shift.get('worst_corruption')}. {_unseen_sentence(shift)}{shift.get('images_per_set', '')} images per "
             f"corrupted set, seed {shift.get('seed', '')}.")
    notes = ["seen in training: the run's corrupt stage drew this family (its colour jitter and RandAugment are not "
             "counted); unknown: the zip's manifest does not say (a zip cbtool did not build, or an older one)."]
    low, high = heat_range(shift, _chance(result))
    red = f"the chance level {_pct(low)}" if low > 0 else "0%"
    html_notes = [f"cell colour: green at {_pct(high)} (the clean accuracy, or the best cell when higher), red at {red} or below."]
    return Table("shift", "Corruption suite (hidden-test estimate)", ["corruption", *severities, "mean", "vs clean", "seen in training"],
                 rows, intro=intro, notes=notes, html_notes=html_notes, heat=(low, high))


_SEEN = {True: "yes", False: "no", None: "unknown"}


def _members_table(result: SimulateResult) -> Table | None:
    """An ensemble zip: each member alone beside the ensemble, on the same clean (and corrupted) images."""
    table = result.members
    if not table:
        return None
    shifted = table["ensemble"].get("shifted") is not None
    header = ["member", "variant", "input", "TTA", "weight", "clean", *(["shifted mean"] if shifted else [])]
    rows = []
    for r in table["members"]:
        rows.append([r["name"], str(r["variant"]), f"{r['input_size']} px", str(r["tta"]), f"{float(r['weight'] or 0):.3f}",
                     _pct(r["clean"]), *([_pct(r["shifted"])] if shifted else [])])
    mean = table.get("members_mean")
    if mean:
        rows.append(["members' mean", "", "", "", "", _pct(mean["clean"]), *([_pct(mean["shifted"])] if shifted else [])])
    ens = table["ensemble"]
    rows.append(["ensemble", "", "", "", "1.000", _pct(ens["clean"]), *([_pct(ens["shifted"])] if shifted else [])])
    intro = ""
    if mean:
        intro = (f"The ensemble scores {_points(ens['clean'] - mean['clean'])} against its members' mean on the clean "
                 f"images (best member: {table.get('best_member')})"
                 + (f", {_points(ens['shifted'] - mean['shifted'])} on the corrupted sets." if shifted and mean["shifted"] is not None else "."))
    notes = [f"{r['name']} not measured: {r['skipped']}" for r in table["members"] if r.get("skipped")]
    html_notes = ["each member predicts the same images alone (model.py's MEMBER global) in the same sandbox run, timed "
                  "apart from the grader's pass"]
    return Table("members", "Ensemble members", header, rows, intro=intro, notes=notes, html_notes=html_notes)


def _tta_table(result: SimulateResult) -> Table | None:
    """--compare-tta: each mode's accuracy on the same clean (and corrupted) images; the intro is the verdict line."""
    from toolkit.runtime.tta_compare import tta_line

    comparison = result.tta_comparison
    if not comparison:
        return None
    rows = []
    for mode, row in comparison["modes"].items():
        marks = [w for w, on in (("submission", mode == comparison["submission"]), ("best", mode == comparison["best"])) if on]
        label = f"{mode} ({', '.join(marks)})" if marks else mode
        timed = "n/a" if row.get("predict_s") is None else f"{row['predict_s']:.2f} s"
        rows.append([label, row["views"], _pct(row["clean"]), _pct(row["shifted"]), timed])
    notes = [f"{mode} not measured: {row['skipped']}" for mode, row in comparison["modes"].items() if row.get("skipped")]
    html_notes = ["each mode predicts the same images in the same sandbox run; the submission's own mode is the graded "
                  "run, the others are extra predict calls timed apart from the grader's pass"] if rows else []
    return Table("tta", "Test-time augmentation, measured", ["TTA mode", "views", "clean", "shifted mean", "predict (clean)"],
                 rows, intro=tta_line(comparison), notes=notes, html_notes=html_notes)


def _unseen_sentence(shift: dict) -> str:
    """The mean over the families training never drew: the honest estimate for a shift nobody trained against."""
    seen = shift.get("seen_in_training") or {}
    unseen = [name for name, v in seen.items() if v is False]
    if not seen or any(v is None for v in seen.values()):
        return "Which families training saw is unknown. "
    if not unseen:
        return "Training drew every family of the suite: no unseen-family estimate. "
    if len(unseen) == len(seen):
        return "Training drew none of these families (no corrupt stage, or all held out): every one is unseen. "
    return (f"Mean over the {len(unseen)} families training never drew {_pct(shift.get('unseen_mean_accuracy'))}, "
            f"over the {len(seen) - len(unseen)} it drew {_pct(shift.get('seen_mean_accuracy'))}. ")


# --- HTML ------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:70rem;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6rem 0 1.4rem} td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.ok{color:#11772d;font-weight:bold} .failed{color:#b00020;font-weight:bold} .nearchance{color:#a05a00;font-weight:bold}
table.heat td{color:#111}
.box{border-left:4px solid #b00020;background:#fff4f4;padding:.6rem 1rem;margin:1rem 0}
.warn{border-left:4px solid #c68a00;background:#fffaf0;padding:.4rem 1rem;margin:.4rem 0}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.85rem} img{max-width:100%}
.big{font-size:1.6rem}
"""


# table key -> the pictures shown under that table: (file, heading, element id)
_PICTURES = {
    "per_class": [(CONFUSION_PNG, "Confusion matrix", "confusion"),
                  (GRADCAM_PNG, "Misclassified held-out images, with Grad-CAM of the predicted class", "gradcam")],
    "shift": [(STRIP_PNG, "One held-out image under every corruption, severities 1-5", "corruption-strip")],
}


def render_html(result: SimulateResult, out_dir: str | Path | None = None, notes: dict[str, str] | None = None) -> str:
    """One self-contained HTML page (no external resources) showing the result and the pictures beside it; `notes`
    ({table key: text}) say under a table why a picture is missing (e.g. Grad-CAM on a zip cbtool did not build)."""
    out_dir = Path(out_dir) if out_dir is not None else None
    parts = [_header(result), _failure(result), *(f"<div class='warn'>{_e(w)}</div>" for w in result.warnings), _headline(result)]
    for table in tables(result):
        parts.append(_html_table(table))
        parts += [_image(out_dir, *picture) for picture in _PICTURES.get(table.key, [])]
        if (notes or {}).get(table.key):
            parts.append(f"<p class='sub' id='{table.key}-note'>{_e(notes[table.key])}</p>")
    body = "\n".join(p for p in parts if p)
    title = f"cbtool simulate: {_e(Path(result.submission).name)}"
    return f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"


def _e(value) -> str:
    return html.escape(str(value))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(_cell(c, table.heat) for c in row) + "</tr>" for row in table.rows)
    intro = f"<p>{_e(table.intro)}</p>" if table.intro else ""
    notes = "".join(f"<p class='sub'>{_e(n)}</p>" for n in [*table.notes, *table.html_notes])
    attrs = f" class='heat' id='{_e(table.key)}-heat'" if table.heat else f" id='{_e(table.key)}-table'"
    grid = f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if table.rows else ""
    return f"<h2>{_e(table.title)}</h2>{intro}{grid}{notes}"


def _cell(value, heat: tuple[float, float] | None) -> str:
    """A table cell; in a heat table a percentage is shaded from red (heat[0]) through yellow to green (heat[1])."""
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)%", str(value)) if heat else None
    if not match:
        return f"<td>{_e(value)}</td>"
    low, high = heat
    t = min(1.0, max(0.0, (float(match.group(1)) / 100 - low) / (high - low))) if high > low else 1.0
    return f"<td style='background:hsl({120 * t:.0f},70%,72%)'>{_e(value)}</td>"


def _header(result: SimulateResult) -> str:
    word, css = verdict(result)
    return (
        f"<h1>cbtool simulate: <span class='{_e(css)}' id='status'>{_e(word)}</span></h1>"
        f"<p class='sub'>submission <code>{_e(result.submission)}</code> &middot; data <code>{_e(result.data)}</code>"
        f" ({_e(result.n_images)} images) &middot; profile <b>{_e(result.profile.get('name'))}</b></p>"
    )


def _failure(result: SimulateResult) -> str:
    failure = result.failure
    if not failure:
        return ""
    tail = failure.stderr_tail
    return (
        f"<div class='box' id='failure'><b>Failure: {_e(failure.kind)}</b> during <b>{_e(failure.phase)}</b>"
        f"<p>{_e(failure.message)}</p>" + (f"<pre>{_e(tail)}</pre>" if tail else "") + "</div>"
    )


def _headline(result: SimulateResult) -> str:
    if not result.scores:
        return ""
    big = f"<p class='big'>accuracy <b id='accuracy'>{_pct(result.scores['accuracy'])}</b>"
    if result.near_chance:
        big += f" <span class='nearchance'>(chance level {_pct(_chance(result))})</span>"
    if result.shift:
        big += f" &middot; shifted <b id='shift-mean'>{_pct(result.shift['mean_accuracy'])}</b>"
    return big + "</p>"


def _image(out_dir: Path | None, name: str, alt: str, element_id: str) -> str:
    if out_dir is None or not (out_dir / name).exists():
        return ""
    data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
    return f"<h2>{_e(alt)}</h2><img id='{element_id}' alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


# --- terminal ---------------------------------------------------------------------------------------------------


def render_text(result: SimulateResult) -> str:
    """The terminal rendering of a simulate result: status, failure, warnings, then the same tables as the HTML."""
    lines = [f"simulate: {verdict(result)[0]}  ({result.submission}, profile {result.profile.get('name')}, {result.n_images} images)"]
    failure = result.failure
    if failure:
        lines += ["", f"FAILED: {failure.kind} during {failure.phase}", *("  " + ln for ln in failure.message.splitlines())]
        if failure.stderr_tail:
            lines += ["  stderr (tail):", *("    " + ln for ln in failure.stderr_tail.rstrip().splitlines()[-15:])]
    lines += [f"warning: {w}" for w in result.warnings]
    for table in tables(result):
        if table.html_only:
            continue
        lines += ["", f"{table.title}:"] + ([table.intro] if table.intro else [])
        lines += [_text_table(table.header, table.rows)] if table.rows else []
        lines += table.notes
    if (result.report or {}).get("html"):
        lines += ["", f"report: {result.report['html']}"]
    return "\n".join(lines)


def _text_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *map(fmt, cells[1:])])
