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
TILE_MIN_WIDTH = 96  # px: a caption line holds ~16 characters, so class names wrap instead of being cut
LINE_HEIGHT = 11  # px per caption line in PIL's default font


def write_report(report: CleanReport, ds: Dataset, out_dir: str | Path) -> dict[str, str]:
    """Write report.json and the contact sheets into `out_dir`; return {name: path} of what was written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = report.to_dict()
    payload["source"] = str(ds.source) if ds.source is not None else None
    payload["class_names"] = list(ds.class_names)
    written = {}
    kept = {g.id: g.kept for g in report.groups if g.kept is not None}
    shown: dict[str, dict[str, int]] = {}
    for reason in REASONS:
        rows = [r for r in report.removed if r.reason == reason]
        if rows:
            # group members sit side by side so a person sees what was matched with what
            rows.sort(key=lambda r: (r.group if r.group is not None else -1, r.index))
            tiles = _tiles(rows, kept, ds, {o["index"]: o["score"] for o in report.outliers})
            title = f"{reason}: {len(rows)} removed" + _showing(tiles)
            written[reason] = str(contact_sheet(ds.images, tiles[:SHEET_MAX], out_dir / f"sheet_{reason}.png", title))
            shown[reason] = {"title": title, "images": len(tiles), "shown": min(len(tiles), SHEET_MAX)}
    if report.outliers:
        tiles = [(o["index"], [_class_name(ds, o["label"]), f"#{o['index']} score {o['score']:.2f}"]) for o in report.outliers]
        title = "most unlike their class (highest score first)" + _showing(tiles)
        written["outliers"] = str(contact_sheet(ds.images, tiles[:SHEET_MAX], out_dir / "sheet_outlier_ranking.png", title))
        shown["outliers"] = {"title": title, "images": len(tiles), "shown": min(len(tiles), SHEET_MAX)}
    payload["sheet_tiles"] = shown  # each sheet's title and how many of its images it shows
    payload["sheets"] = written
    write_json(out_dir / "report.json", payload)
    written["report"] = str(out_dir / "report.json")
    return written


def _tiles(rows, kept: dict, ds: Dataset, scores: dict | None = None) -> list[tuple[int, list[str]]]:
    """Captioned tiles (class name, then index and group, or the outlier score); the copy that was kept is shown
    first in its group, so each removal can be compared with it."""
    tiles, shown, scores = [], set(), scores or {}
    for r in rows:
        group = f" g{r.group}" if r.group is not None else (f" score {scores[r.index]:.2f}" if r.index in scores else "")
        if r.group in kept and r.group not in shown:
            shown.add(r.group)
            tiles.append((kept[r.group], [_class_name(ds, ds.labels[kept[r.group]]), f"KEPT #{kept[r.group]}{group}"]))
        tiles.append((r.index, [_class_name(ds, r.label), f"#{r.index}{group}"]))
    return tiles


def _class_name(ds: Dataset, label) -> str:
    label = int(label)
    return str(ds.class_names[label]) if 0 <= label < len(ds.class_names) else f"class {label}"


def _showing(tiles: list) -> str:
    """The sheet title's tail when the sheet holds fewer tiles than there are images behind it."""
    if len(tiles) <= SHEET_MAX:
        return ""
    return f" (showing {SHEET_MAX} of {len(tiles)} images; report.json lists every one)"


def contact_sheet(images: np.ndarray, tiles: list[tuple[int, str | list[str]]], path: Path, title: str,
                  columns: int = COLUMNS, scale: int = 1) -> Path:
    """A grid of images (enlarged `scale` times, pixels kept sharp), each captioned by its lines (long ones wrapped
    to the tile's width), written as a PNG."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    h, w = images.shape[1] * scale, images.shape[2] * scale
    tile_w = max(w, TILE_MIN_WIDTH)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    captions = [wrap_caption([c] if isinstance(c, str) else c, tile_w - 2, lambda t: measure(t, font=font)) for _, c in tiles]
    cap = LINE_HEIGHT * max((len(c) for c in captions), default=1) + 2
    cols = max(1, min(columns, len(tiles)))
    rows = (len(tiles) + cols - 1) // cols
    title_lines = wrap_caption([title], max(cols * (tile_w + 2), 400) - 4, lambda t: measure(t, font=font))
    head = LINE_HEIGHT * len(title_lines) + 6
    sheet = Image.new("RGB", (max(cols * (tile_w + 2), 400), head + rows * (h + cap + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.multiline_text((2, 2), "\n".join(title_lines), fill="black", font=font, spacing=1)
    for k, ((index, _), lines) in enumerate(zip(tiles, captions)):
        x, y = (k % cols) * (tile_w + 2), head + (k // cols) * (h + cap + 2)
        tile = Image.fromarray(np.asarray(images[index], dtype=np.uint8))
        sheet.paste(tile.resize((w, h), Image.NEAREST) if scale != 1 else tile, (x + (tile_w - w) // 2, y))
        draw.multiline_text((x + 1, y + h + 1), "\n".join(lines), fill="black", font=font, spacing=1)
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)
    return path


def zoom(images: np.ndarray) -> int:
    """The enlargement that makes small images (the AN2DL 96x96) readable on a report page: 2 up to 128 px, else 1."""
    return 2 if max(images.shape[1:3]) <= 128 else 1


def wrap_caption(lines: list[str], width_px: float, measure: Callable[[str], float]) -> list[str]:
    """`lines` wrapped at spaces to fit `width_px` (a word longer than the width is split, never cut off)."""
    out: list[str] = []
    for line in lines:
        current = ""
        for word in str(line).split(" "):
            candidate = f"{current} {word}" if current else word
            if measure(candidate) <= width_px:
                current = candidate
                continue
            if current:
                out.append(current)
            current = word
            while measure(current) > width_px and len(current) > 1:
                cut = 1
                while cut < len(current) - 1 and measure(current[:cut + 1]) <= width_px:
                    cut += 1
                out.append(current[:cut])
                current = current[cut:]
        out.append(current)
    return out


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
