"""Metrics against values computed by hand, and the plots as real PNG files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from toolkit.train import metrics

# 3 classes, 10 samples. Confusion matrix (rows true, cols predicted):
#   true 0: [3, 1, 0]   true 1: [1, 2, 1]   true 2: [0, 0, 2]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 0, 1, 0, 1, 1, 2, 2, 2])


def test_confusion_matrix_by_hand():
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 2, 1], [0, 0, 2]]


def test_scores_by_hand():
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 10)
    # recalls 3/4, 2/4, 2/2
    assert metrics.balanced_accuracy(Y_TRUE, Y_PRED, 3) == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    stats = metrics.per_class(metrics.confusion_matrix(Y_TRUE, Y_PRED, 3))
    # precisions 3/4, 2/3, 2/3
    np.testing.assert_allclose(stats["precision"], [0.75, 2 / 3, 2 / 3])
    np.testing.assert_allclose(stats["recall"], [0.75, 0.5, 1.0])
    f1 = [0.75, 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)]
    np.testing.assert_allclose(stats["f1"], f1)
    assert stats["support"].tolist() == [4, 4, 2]
    assert metrics.macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx(np.mean(f1))


def test_absent_class_is_zero_not_nan_and_excluded_from_balanced_accuracy():
    # class 2 never occurs and is never predicted
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    report = metrics.classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert report["n"] == 4


def test_column_labels_and_bad_input():
    assert metrics.accuracy(Y_TRUE.reshape(-1, 1), Y_PRED) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_matrix([0, 1], [0], 3)


def test_plots_are_png(tmp_path):
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    a = metrics.plot_confusion_matrix(cm, ["x", "y", "z"], tmp_path / "cm.png")
    history = {"loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.9], "accuracy": [0.3, 0.6, 0.8], "val_accuracy": [0.3, 0.5, 0.7]}
    b = metrics.plot_learning_curves(history, tmp_path / "curves.png", phase_boundary=1)
    for path in (a, b):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 2000
    assert not list(tmp_path.glob(".*tmp*"))


def test_importable_without_tensorflow():
    code = "import sys, toolkit.train.metrics; print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
