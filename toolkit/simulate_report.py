"""The simulate report directory: scores.json, details.json, two PNG plots and one self-contained HTML page.

- scores.json: Codabench's scoring-file form, a flat {"accuracy": ...} object (only when the submission ran).
- details.json: everything simulate measured, with versions and timings.
- confusion_matrix.png, corruption_severity.png (with --shift).
- report.html: one file, images inlined as base64, readable offline and attachable to an issue.

The terminal text (`render_text`) and the HTML page (`render_html`) both render `tables(result)`, one table model:
a new measurement is one new row or `Table` there, and shows in both.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from toolkit.fsutil import atomic_open, write_json
from toolkit.runtime.simulate import SimulateResult

SCORES_FILE = "scores.json"
DETAILS_FILE = "details.json"
CONFUSION_PNG = "confusion_matrix.png"
SHIFT_PNG = "corruption_severity.png"
HTML_FILE = "report.html"


def codabench_scores(result: SimulateResult) -> dict:
    """The flat leaderboard object Codabench's scoring program writes to scores.json."""
    scores = result.scores or {}
    out = {key: float(scores[key]) for key in ("accuracy", "balanced_accuracy", "macro_f1") if key in scores}
    if result.shift:
        out["shift_mean_accuracy"] = float(result.shift["mean_accuracy"])
    return out


def write_report(result: SimulateResult, out_dir: str | Path) -> dict[str, str]:
    """Write the report files for one simulate result; return {what: path} (also set as `result.report`)."""
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
        plot_shift(result.shift, out_dir / SHIFT_PNG)
        paths["corruption_plot"] = str(out_dir / SHIFT_PNG)
    paths["details"] = str(out_dir / DETAILS_FILE)
    paths["html"] = str(out_dir / HTML_FILE)
    result.report = paths
    write_json(out_dir / DETAILS_FILE, result.to_dict())
    with atomic_open(out_dir / HTML_FILE, "w", encoding="utf-8") as handle:
        handle.write(render_html(result, out_dir))
    return paths


def plot_shift(shift: dict, path: str | Path) -> Path:
    """Accuracy against severity (0 = clean) for each corruption family, with the clean level as a dashed line."""
    from matplotlib.figure import Figure

    from toolkit.fsutil import atomic_path

    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    clean = shift["clean_accuracy"]
    seen = shift.get("seen_in_training") or {}
    for i, (name, per_severity) in enumerate(shift["table"].items()):
        severities = sorted(per_severity, key=int)
        style = "-" if i < 10 else "--"
        label = name + {True: " (seen)", False: " (unseen)"}.get(seen.get(name), "")
        ax.plot([0, *map(int, severities)], [clean, *(per_severity[s] for s in severities)], style, marker="o" if seen.get(name) is not False else "x",
                markersize=3, label=label)
    ax.axhline(clean, color="black", linestyle=":", linewidth=1, label=f"clean {clean:.3f}")
    ax.axhline(shift["mean_accuracy"], color="red", linestyle=":", linewidth=1, label=f"shifted mean {shift['mean_accuracy']:.3f}")
    if shift.get("unseen_mean_accuracy") is not None:
        unseen = shift["unseen_mean_accuracy"]
        ax.axhline(unseen, color="purple", linestyle="-.", linewidth=1, label=f"unseen-family mean {unseen:.3f}")
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Accuracy under corruption (estimate of the hidden test)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


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


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


def tables(result: SimulateResult) -> list[Table]:
    """The result's tables, in display order: scores, time and memory, per class, corruption suite, versions."""
    out = [t for t in (_scores_table(result), _timing_table(result), _per_class_table(result), _shift_table(result)) if t]
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
    if shift:
        rows += [["shifted mean accuracy", _pct(shift["mean_accuracy"])], ["drop from clean", _pct(shift["drop"])]]
    return Table("scores", "Scores", ["metric", "value"], rows)


_TIMING_LABELS = {
    "import_s": "import model.py",
    "load_s": "load the model",
    "fit_s": "fit (the contract calls it)",
    "grader_pass_s": "the grader's own pass (judged against the limit)",
    "clean_predict_s": "predict the held-out set (every dtype)",
    "probes_predict_s": "simulate's extra probes",
    "shift_predict_s": "predict the corrupted sets",
    "shift_corrupt_s": "make the corrupted sets",
    "wall_s": "wall time, whole run",
}


def _timing_table(result: SimulateResult) -> Table | None:
    timing = result.timing or {}
    if not timing:
        return None
    rows = [[label, f"{timing[key]:.2f} s"] for key, label in _TIMING_LABELS.items() if timing.get(key) is not None]
    if timing.get("images_per_s") is not None:
        rows.append(["images per second", f"{timing['images_per_s']:.1f}"])
    if timing.get("images_within_limit") is not None:
        rows.append(["images the time limit allows at this rate", f"{timing['images_within_limit']:,}"])
    if result.peak_memory_mb is not None:
        rows.append(["peak memory (MB)", f"{result.peak_memory_mb:.0f}"])
    notes = []
    limits = result.limits or {}
    if limits:
        notes.append(f"limits: {limits.get('time_limit_s'):g} s for the grader's own pass (import + load + fit + one predict "
                     f"of the held-out set); {limits.get('memory_limit_mb')} MB resident memory (a budget that approximates "
                     "the grader: the child is killed above it)")
    if timing.get("images_within_limit") is not None:
        notes.append(f"at this rate the time limit allows about {timing['images_within_limit']:,} images in predict "
                     "(on this machine; the grader's may be slower)")
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
    rows = [[name, *(_pct(per.get(s)) for s in severities), _pct(shift["per_corruption_mean"][name]), _SEEN[seen.get(name)]]
            for name, per in shift["table"].items()]
    intro = (f"Clean accuracy {_pct(shift['clean_accuracy'])}; mean over {len(rows)} corruptions x {len(severities)} severities "
             f"{_pct(shift['mean_accuracy'])} (drop {_pct(shift['drop'])}); worst: {shift.get('worst_corruption')}. "
             f"{_unseen_sentence(shift)}{shift.get('images_per_set', '')} images per corrupted set, seed {shift.get('seed', '')}.")
    notes = ["seen in training: the run's corrupt stage drew this family (its colour jitter and RandAugment are not "
             "counted); unknown: the zip's manifest does not say (a zip cbtool did not build, or an older one)."]
    return Table("shift", "Corruption suite (hidden-test estimate)", ["corruption", *severities, "mean", "seen in training"], rows,
                 intro=intro, notes=notes)


_SEEN = {True: "yes", False: "no", None: "unknown"}


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
.ok{color:#11772d;font-weight:bold} .failed{color:#b00020;font-weight:bold}
.box{border-left:4px solid #b00020;background:#fff4f4;padding:.6rem 1rem;margin:1rem 0}
.warn{border-left:4px solid #c68a00;background:#fffaf0;padding:.4rem 1rem;margin:.4rem 0}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.85rem} img{max-width:100%}
.big{font-size:1.6rem}
"""


def render_html(result: SimulateResult, out_dir: str | Path | None = None) -> str:
    """One self-contained HTML page (no external resources) showing the result and the plots beside it."""
    out_dir = Path(out_dir) if out_dir is not None else None
    parts = [_header(result), _failure(result), *(f"<div class='warn'>{_e(w)}</div>" for w in result.warnings), _headline(result)]
    images = {"per_class": (CONFUSION_PNG, "Confusion matrix"), "shift": (SHIFT_PNG, "Accuracy by corruption and severity")}
    for table in tables(result):
        parts.append(_html_table(table))
        if table.key in images:
            parts.append(_image(out_dir, *images[table.key]))
    body = "\n".join(p for p in parts if p)
    title = f"cbtool simulate: {_e(Path(result.submission).name)}"
    return f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"


def _e(value) -> str:
    return html.escape(str(value))


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    intro = f"<p>{_e(table.intro)}</p>" if table.intro else ""
    notes = "".join(f"<p class='sub'>{_e(n)}</p>" for n in [*table.notes, *table.html_notes])
    return f"<h2>{_e(table.title)}</h2>{intro}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def _header(result: SimulateResult) -> str:
    return (
        f"<h1>cbtool simulate: <span class='{_e(result.status)}' id='status'>{_e(result.status.upper())}</span></h1>"
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
    if result.shift:
        big += f" &middot; shifted <b id='shift-mean'>{_pct(result.shift['mean_accuracy'])}</b>"
    return big + "</p>"


def _image(out_dir: Path | None, name: str, alt: str) -> str:
    if out_dir is None or not (out_dir / name).exists():
        return ""
    data = base64.b64encode((out_dir / name).read_bytes()).decode("ascii")
    return f"<h2>{_e(alt)}</h2><img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


# --- terminal ---------------------------------------------------------------------------------------------------


def render_text(result: SimulateResult) -> str:
    """The terminal rendering of a simulate result: status, failure, warnings, then the same tables as the HTML."""
    lines = [f"simulate: {result.status.upper()}  ({result.submission}, profile {result.profile.get('name')}, {result.n_images} images)"]
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
        lines += [_text_table(table.header, table.rows), *table.notes]
    if (result.report or {}).get("html"):
        lines += ["", f"report: {result.report['html']}"]
    return "\n".join(lines)


def _text_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *map(fmt, cells[1:])])
