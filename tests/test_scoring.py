"""The output-contract check and the scores simulate reports."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.runtime.scoring import BadOutput, check_output, score


def test_valid_indices_pass_unchanged():
    out = check_output(np.array([0, 3, 7, 1], dtype=np.int32), 4, 8)
    assert out.predictions.dtype == np.int64 and out.predictions.tolist() == [0, 3, 7, 1] and out.warnings == []


def test_whole_floats_pass_with_a_warning():
    out = check_output(np.array([1.0, 2.0]), 2, 8)
    assert out.predictions.tolist() == [1, 2]
    assert "whole numbers" in out.warnings[0]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (None, "returned None"),
        (np.eye(8)[[0, 3, 5]], "one-hot rows of shape (3, 8)"),
        (np.full((3, 8), 1 / 8), "class probabilities"),
        (np.random.default_rng(0).normal(size=(3, 8)), "logits"),
        (np.array([0, 1]), "2 predictions for 3 images"),
        (np.array([[0], [1], [2]]), "reshape(-1)"),
        (np.array([0, 1, 8]), "from 0 to 8; expected 0..7"),
        (np.array([0, -1, 2]), "expected 0..7"),
        (np.array([0.2, 0.9, 0.4]), "probabilities, not class indices"),
        (np.array([0.5, 1.5, 2.0]), "non-integer values"),
        (np.array(["a", "b", "c"]), "expected integer class indices"),
        (np.array([0, np.nan, 1]), "expected integer class indices"),
    ],
)
def test_contract_violations_are_named(value, needle):
    with pytest.raises(BadOutput) as info:
        check_output(value, 3, 8, what="predict(X uint8, 3 images)")
    assert needle in str(info.value)
    assert "predict(X uint8, 3 images)" in str(info.value)


def test_one_hot_message_says_how_to_fix():
    with pytest.raises(BadOutput, match=r"np.argmax\(output, axis=-1\)"):
        check_output(np.eye(4)[[0, 1, 2]], 3, 4)


def test_score_matches_hand_computed_values():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    s = score(y_true, y_pred, ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert s["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert s["per_class"]["b"]["f1"] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    f1s = [2 * (2 / 3) * (2 / 3) / (4 / 3), 0.8, 0.0]
    assert s["macro_f1"] == pytest.approx(np.mean(f1s))
    assert s["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
