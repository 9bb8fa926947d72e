"""The one rule that picks a TTA mode from measurements (simulate's comparison, build-submission --tta auto)."""

import pytest

from toolkit.tta_choice import choose_tta


def test_more_views_must_win_by_more_than_a_tie():
    assert choose_tta({"none": {"clean": 0.950}, "flip": {"clean": 0.9505}, "d4": {"clean": 0.9508}})[0] == "none"
    assert choose_tta({"none": {"clean": 0.950}, "flip": {"clean": 0.949}, "d4": {"clean": 0.960}})[0] == "d4"


def test_tta_that_hurts_is_not_chosen_and_shift_counts():
    best, reason = choose_tta({"none": {"clean": 0.967, "shifted": 0.90}, "flip": {"clean": 0.897, "shifted": 0.88}})
    assert best == "none" and "clean and shifted" in reason and "flip 88.85%" in reason
    assert choose_tta({"none": {"clean": 0.95, "shifted": 0.80}, "d4": {"clean": 0.95, "shifted": 0.86}})[0] == "d4"


def test_unknown_modes_are_refused():
    with pytest.raises(ValueError):
        choose_tta({"rot45": {"clean": 1.0}})
