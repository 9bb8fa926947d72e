"""The clean report on disk: report.json plus one PNG contact sheet per removal reason (and the outlier ranking)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.data.clean import REASONS, CleanReport
from toolkit.data.io import Dataset
from toolkit.fsutil import atomic_path, write_json

SHEET_MAX = 120  # images per sheet: enough to judge a reason, small enough to write fast
COLUMNS = 12


def write_report(report: CleanReport, ds: Dataset, out_dir: str | Path) -> dict[str, str]:
    """Write report.json and the contact sheets into `out_dir`; return {name: path} of what was written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = report.to_dict()
    payload["source"] = str(ds.source) if ds.source is not None else None
    payload["class_names"] = list(ds.class_names)
    written = {}
    kept = {g.id: g.kept for g in report.groups if g.kept is not None}
    for reason in REASONS:
        rows = [r for r in report.removed if r.reason == reason]
        if rows:
            # group members sit side by side so a person sees what was matched with what
            rows.sort(key=lambda r: (r.group if r.group is not None else -1, r.index))
            tiles = _tiles(rows, kept, ds)
            written[reason] = str(contact_sheet(ds.images, tiles, out_dir / f"sheet_{reason}.png", f"{reason}: {len(rows)} removed"))
    if report.outliers:
        tiles = [(o["index"], f"{o['index']} {o['score']:.1f}") for o in report.outliers[:SHEET_MAX]]
        written["outliers"] = str(contact_sheet(ds.images, tiles, out_dir / "sheet_outlier_ranking.png", "most unlike their class"))
    payload["sheets"] = written
    write_json(out_dir / "report.json", payload)
    written["report"] = str(out_dir / "report.json")
    return written


def _tiles(rows, kept: dict, ds: Dataset) -> list[tuple[int, str]]:
    """Captioned tiles; the copy that was kept is shown first in its group, so each removal can be compared."""
    tiles, shown = [], set()
    for r in rows:
        if r.group in kept and r.group not in shown:
            shown.add(r.group)
            tiles.append((kept[r.group], f"KEPT {kept[r.group]} g{r.group}"))
        tiles.append((r.index, f"{r.index} {ds.class_names[r.label][:6]} g{r.group}"))
    return tiles[:SHEET_MAX]


def contact_sheet(images: np.ndarray, tiles: list[tuple[int, str]], path: Path, title: str) -> Path:
    """A grid of images (each with a caption) written atomically as a PNG."""
    from PIL import Image, ImageDraw

    h, w = images.shape[1:3]
    cap, head = 12, 16
    cols = min(COLUMNS, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + 2), head + rows * (h + cap + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 2), title, fill="black")
    for k, (index, caption) in enumerate(tiles):
        x, y = (k % cols) * (w + 2), head + (k // cols) * (h + cap + 2)
        sheet.paste(Image.fromarray(images[index]), (x, y))
        draw.text((x + 1, y + h), caption, fill="black")
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)
    return path


def clean_file(data: str | Path, output: str | Path | None, report_dir: str | Path | None, config,
               allow_pickle: bool = False, dry_run: bool = False,
               progress: Callable[[int, int], None] | None = None) -> tuple[CleanReport, dict]:
    """Load -> find problems -> write the cleaned npz (unless dry_run) and the report. Timings per stage included.

    `progress(k, total)` reports k more images hashed out of the `total` to hash (for a progress bar).
    """
    import time

    from toolkit.data.clean import find_problems
    from toolkit.data.io import load_dataset, save_dataset

    timings: dict[str, float] = {}
    t = time.perf_counter()
    ds = load_dataset(data, allow_pickle=allow_pickle)
    timings["load"] = time.perf_counter() - t
    report = find_problems(ds, config, timings, progress)
    t = time.perf_counter()
    written = {}
    if not dry_run and output is not None:
        written["output"] = str(save_dataset(ds.subset(np.asarray(report.kept, dtype=np.int64)), output))
    timings["save"] = time.perf_counter() - t
    t = time.perf_counter()
    report.timings = timings  # report.json carries every stage before its own writing
    if report_dir is not None:
        written.update(write_report(report, ds, report_dir))
    timings["report"] = time.perf_counter() - t
    return report, {"dataset": ds, "written": written}
