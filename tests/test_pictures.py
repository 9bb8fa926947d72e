"""The pictures cbtool draws: contact-sheet captions and truncation, learning-curve ticks and markers, and the
simulate report's wording (points, chance level), checked on the real images and figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from toolkit.data import clean_report
from toolkit.data.clean import CleanReport, Group, Removal
from toolkit.data.io import Dataset
from toolkit.train import metrics

CLASSES = ["Basophil", "Eosinophil", "Erythroblast", "Immature granulocytes", "Lymphocyte", "Monocyte", "Neutrophil", "Platelet"]


def _dataset(n: int = 260) -> Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    return Dataset(images, np.arange(n) % 8, list(CLASSES), np.arange(n))


def _report(ds: Dataset) -> CleanReport:
    """200 copies of one image spread over the classes (the AN2DL meme), kept copy 0, plus an outlier ranking."""
    members = list(range(201))
    removed = [Removal(i, "outlier_cluster", 0, int(ds.labels[i])) for i in members[1:]]
    groups = [Group(0, "outlier_cluster", members, [int(ds.labels[i]) for i in members], kept=0)]
    outliers = [{"index": 203 + k, "score": 9.5 - k, "label": int(ds.labels[203 + k]), "removed": False} for k in range(5)]
    kept = [i for i in range(len(ds)) if i not in set(members[1:])]
    return CleanReport(len(ds), kept, removed, groups, outliers, {}, {})


def test_truncated_sheet_says_how_many_it_shows_and_labels_tiles_with_full_class_names(tmp_path):
    ds = _dataset()
    written = clean_report.write_report(_report(ds), ds, tmp_path)
    payload = json.loads((tmp_path / "report.json").read_text())
    sheet = payload["sheet_tiles"]["outlier_cluster"]
    assert sheet["title"].startswith("outlier_cluster: 200 removed (showing 120 of 201 images")
    assert (sheet["images"], sheet["shown"]) == (201, 120)
    tiles = clean_report._tiles(_report(ds).removed, {0: 0}, ds)
    assert tiles[0] == (0, ["Basophil", "KEPT #0 g0"]) and tiles[3] == (3, ["Immature granulocytes", "#3 g0"])
    with Image.open(written["outlier_cluster"]) as img:
        assert img.width == 12 * 98 and img.height > 10 * 96  # 10 rows of 12 tiles: 120, not 201
    assert "showing" not in payload["sheet_tiles"]["outliers"]["title"]  # 5 ranked images, all shown


def test_outlier_ranking_tiles_carry_class_and_score(tmp_path, monkeypatch):
    ds = _dataset()
    seen, real = {}, clean_report.contact_sheet

    def spy(images, tiles, path, title):
        seen[path.name] = tiles
        return real(images, tiles, path, title)

    monkeypatch.setattr(clean_report, "contact_sheet", spy)
    clean_report.write_report(_report(ds), ds, tmp_path)
    ranking = seen["sheet_outlier_ranking.png"]
    assert ranking[0] == (203, [CLASSES[203 % 8], "#203 score 9.50"])
    assert [t[1][0] for t in ranking] == [CLASSES[i % 8] for i in range(203, 208)]
    report = _report(ds)
    report.removed.append(Removal(204, "outlier", None, int(ds.labels[204])))  # --drop-outliers: its tile shows the score
    clean_report.write_report(report, ds, tmp_path / "dropped")
    assert seen["sheet_outlier.png"] == [(204, [CLASSES[204 % 8], "#204 score 8.50"])]


def test_captions_wrap_at_the_tile_width_and_never_lose_characters():
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = lambda text: ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)  # noqa: E731
    lines = clean_report.wrap_caption(["Immature granulocytes", "#12 g3"], 94, measure)
    assert lines == ["Immature", "granulocytes", "#12 g3"]
    long = clean_report.wrap_caption(["Supercalifragilisticexpialidocious-cells"], 60, measure)
    assert "".join(long) == "Supercalifragilisticexpialidocious-cells" and all(measure(t) <= 60 for t in long) and len(long) > 2


def _history(epochs: int = 17) -> dict:
    val = [0.2 + 0.05 * min(e, 12) - (0.01 if e > 12 else 0) for e in range(1, epochs + 1)]
    return {"epoch": list(range(1, epochs + 1)), "phase": [1] * 3 + [2] * (epochs - 3),
            "loss": [2.0 / e for e in range(1, epochs + 1)], "val_loss": [2.1 / e for e in range(1, epochs + 1)],
            "accuracy": [min(0.99, 0.1 * e) for e in range(1, epochs + 1)], "val_accuracy": val,
            "lr": [1e-3] * 3 + [1e-4 * 0.8 ** e for e in range(epochs - 3)]}


def test_learning_curves_have_integer_epochs_the_best_epoch_and_a_learning_rate_panel():
    fig = metrics.learning_curves_figure(_history(), phase_boundary=3)
    fig.canvas.draw()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "learning rate (end of epoch)"]
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        labels = [line.get_label() for line in ax.get_lines()]
        assert "best epoch 12 (val acc 0.800)" in labels and "phase 2" in labels
    assert fig.axes[2].get_yscale() == "log"  # 1e-3 down to ~5e-6 spans more than 20x
    assert metrics.best_epoch({"val_accuracy": [0.5, 0.7, 0.7, 0.6]}) == (2, 0.7)  # the first best, as training keeps


def test_learning_curves_without_lr_keep_two_panels(tmp_path):
    history = {k: v for k, v in _history(5).items() if k != "lr"}
    fig = metrics.learning_curves_figure(history)
    assert len(fig.axes) == 2
    path = metrics.plot_learning_curves(history, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradcam_on_a_zip_cbtool_did_not_build_says_it_needs_one(tmp_path):
    import zipfile

    from toolkit.gradcam import misclassified_sheet

    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("model.py", "class Model:\n    def predict(self, X):\n        return X[:, 0, 0, 0] * 0\n")
    ds = _dataset(16)
    sheet = misclassified_sheet(foreign, ds.images, ds.labels, CLASSES, tmp_path / "g.png")
    assert sheet.path is None and not (tmp_path / "g.png").exists()
    assert "Grad-CAM needs a cbtool-built zip in the portable or keras format" in sheet.note and "no cbtool manifest" in sheet.note


def test_gradcam_points_at_the_region_that_drives_the_class_score():
    """A network whose class-0 score grows with brightness: Grad-CAM of class 0 peaks on the one bright patch."""
    from tensorflow import keras

    from toolkit.gradcam import gradcam, overlay

    inputs = keras.Input((32, 32, 3))
    features = keras.layers.Conv2D(1, 4, strides=4, use_bias=False, activation="relu", kernel_initializer="ones", name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer=keras.initializers.Constant([[0.01, -0.01]]))(pooled)
    model = keras.Model(inputs, outputs)
    images = np.full((2, 32, 32, 3), 20, dtype=np.uint8)
    images[0, :8, :8] = 250  # top-left
    images[1, 24:, 16:24] = 250  # bottom, third column of cells
    cams = gradcam(model, images.astype(np.float32), np.array([0, 0]))
    assert cams.shape == (2, 8, 8) and cams.max() == 1.0
    assert np.unravel_index(cams[0].argmax(), cams[0].shape) in {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert np.unravel_index(cams[1].argmax(), cams[1].shape) in {(6, 4), (6, 5), (7, 4), (7, 5)}
    shown = overlay(np.full_like(images, 128), cams)  # on a flat grey image only the map colours the overlay
    assert shown.shape == images.shape and shown.dtype == np.uint8
    hot, cold = shown[0, :8, :8].reshape(-1, 3).mean(axis=0), shown[0, 24:, 24:].reshape(-1, 3).mean(axis=0)
    assert hot[0] > cold[0] + 50 and cold[2] > hot[2] + 50, (hot, cold)  # red where it looked, blue elsewhere


def test_model_spec_is_read_from_model_py_without_running_it():
    from toolkit.gradcam import model_spec

    assert model_spec("import os\nMODEL_SPEC = {'variant': 'convnext_test', 'depths': [1, 1, 2, 1]}\nos.remove('x')\n") == {
        "variant": "convnext_test", "depths": [1, 1, 2, 1]}
    assert model_spec("MODEL_SPEC = build()\n") is None and model_spec("def (:") is None and model_spec("") is None


def test_heat_range_is_red_at_chance_and_green_at_the_best_cell():
    from toolkit.simulate_pictures import heat_range

    shift = {"clean_accuracy": 0.9, "table": {"jpeg": {"1": 0.85, "5": 0.4}, "bubbles": {"1": 0.92, "5": 0.6}}}
    assert heat_range(shift, 0.125) == (0.125, 0.92)
    assert heat_range(shift, None) == (0.0, 0.92)
    near = {"clean_accuracy": 0.225, "table": {"jpeg": {"1": 0.2, "5": 0.35}}}
    assert heat_range(near, 0.335) == (0.335, 0.35)  # a model at chance: (almost) every cell is red
    low, high = heat_range(near, 0.5)
    assert low == 0.5 and high == pytest.approx(0.5, abs=1e-5) and high > low  # every cell below chance: all red
