"""Data sanity in the one loader and the data commands: wrong layouts and normalised pixels get the likely cause and
the fix; non-fatal findings reach the user as warnings; split warns (or refuses) when a class cannot reach a split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import main
from toolkit.data.io import load_dataset
from toolkit.errors import DataError

RNG = np.random.default_rng(3)
PIXELS = RNG.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
LABELS = np.arange(12) % 3


def _npz(tmp_path, images, labels=LABELS, name="d.npz", key="images"):
    path = tmp_path / name
    np.savez(path, **{key: images, "labels": labels})
    return path


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(path) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_channel_first_names_the_layout_and_the_transpose(tmp_path):
    path = _npz(tmp_path, PIXELS.transpose(0, 3, 1, 2))
    message = _one_line_error(path)
    assert "(12, 3, 16, 16)" in message and "channels first (N,3,H,W)" in message
    assert "transpose(0, 2, 3, 1)" in message
    fixed = np.load(path)["images"].transpose(0, 2, 3, 1)  # the advice, applied, loads the original pixels
    assert np.array_equal(load_dataset(_npz(tmp_path, fixed, name="fixed.npz")).images, PIXELS)


def test_uint8_holding_0_1_is_refused_with_cause(tmp_path):
    truncated = (PIXELS / 255.0).astype(np.uint8)  # what `(x / 255).astype(np.uint8)` stores: 0 everywhere, 1 for 255
    assert truncated.max() == 1
    message = _one_line_error(_npz(tmp_path, truncated))
    assert "only the values 0 and 1" in message and "divided by 255" in message and "without dividing" in message


@pytest.mark.parametrize("lo,hi,cause", [(-1.0, 1.0, "[-1, 1]"), (-2.1, 2.6, "standardised"), (-123.7, 151.1, "mean subtracted")])
def test_negative_floats_name_the_normalisation(tmp_path, lo, hi, cause):
    images = (PIXELS / 255.0 * (hi - lo) + lo).astype(np.float32)
    message = _one_line_error(_npz(tmp_path, images))
    assert "found range" in message and cause in message and "fix:" in message


def test_minus_one_to_one_advice_restores_the_pixels(tmp_path):
    images = PIXELS.astype(np.float32) / 127.5 - 1
    message = _one_line_error(_npz(tmp_path, images))
    assert "np.rint((x + 1) * 127.5).astype(np.uint8)" in message
    x = images
    assert np.array_equal(np.rint((x + 1) * 127.5).astype(np.uint8), PIXELS)


def test_float_0_1_is_rescaled_with_a_warning(tmp_path):
    path = _npz(tmp_path, PIXELS.astype(np.float32) / 255.0)
    ds = load_dataset(path)
    assert np.array_equal(ds.images, PIXELS)  # x/255 stored as floats comes back as the original pixels
    assert len(ds.warnings) == 1 and str(path) in ds.warnings[0] and "[0, 1]" in ds.warnings[0]
    assert "multiplied by 255" in ds.warnings[0]
    assert ds.stored["images"].dtype == "float32" and "scaled" in ds.stored["images"].converted
    assert load_dataset(_npz(tmp_path, PIXELS, name="raw.npz")).warnings == []


def test_commands_carry_loader_warnings(tmp_path):
    path = _npz(tmp_path, PIXELS.astype(np.float32) / 255.0, labels=np.arange(12) % 2)
    for args in (["inspect", path], ["split", path, "--val", "0.5", "-o", tmp_path / "s"],
                 ["clean", path, "--dry-run"]):
        result = _run(*args, "--json")
        assert result.exit_code == 0, result.output
        assert any("[0, 1]" in w for w in json.loads(result.output)["warnings"]), args
        text = _run(*args)
        assert "warning: " in text.output and "[0, 1]" in text.output, args


def test_train_carries_loader_warnings_of_both_files(tmp_path):
    """train prints and records what the loader found in DATA and in --val (their rescaling is not silent)."""
    from toolkit.train.config import resolve_config
    from toolkit.train.fit import _warnings, load_training_data

    floats = _npz(tmp_path, PIXELS.astype(np.float32) / 255.0, name="floats.npz")
    data, val = load_training_data(_npz(tmp_path, PIXELS, name="raw.npz"), floats)
    seen: list[str] = []
    found = _warnings(data, data, val, True, resolve_config(overrides={"model": "convnext_test"}), seen.append)
    assert found == seen and any("[0, 1]" in w and "floats.npz" in w for w in found)


def test_predict_test_sets_carry_loader_warnings(tmp_path):
    """predict's reader keeps the loader's findings, labelled or not (PredictResult.warnings starts with them)."""
    from toolkit.submission.predict import read_test_set

    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, images=PIXELS.astype(np.float32) / 255.0)
    for path in (unlabelled, _npz(tmp_path, PIXELS.astype(np.float32) / 255.0, name="l.npz")):
        test = read_test_set(path, allow_pickle=False)
        assert np.array_equal(test.images, PIXELS) and any("[0, 1]" in w and path.name in w for w in test.warnings), path


def test_inspect_shows_stored_float32_and_the_conversion(tmp_path):
    path = tmp_path / "public_data.npz"
    np.savez(path, data=PIXELS.astype(np.float32), labels=np.array(["healthy", "unhealthy", "healthy"] * 4))
    info = json.loads(_run("inspect", path, "--json").output)
    assert info["dtype"] == "uint8"  # the loaded dtype, as before
    assert info["stored"]["images"] == {"key": "data", "dtype": "float32", "shape": [12, 16, 16, 3],
                                        "converted": "converted to uint8"}
    assert info["stored"]["labels"]["key"] == "labels" and "class indices" in info["stored"]["labels"]["converted"]
    text = _run("inspect", path).output
    assert "'data' (12, 16, 16, 3) float32, converted to uint8" in text


def test_inspect_warns_about_small_and_absent_classes(tmp_path):
    labels = np.array([0] * 3 + [1] * 9 + [2] * 12)
    images = RNG.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "few.npz", images=images, labels=labels, class_names=np.array(["Basophil", "b", "c", "Platelet"]))
    info = json.loads(_run("inspect", tmp_path / "few.npz", "--json").output)
    warned = " ".join(info["warnings"])
    assert "'Basophil' has only 3 of 24" in warned and "'b' has only 9" in warned and "'c'" not in warned
    assert "'Platelet' has no images" in warned


def _few_basophils(tmp_path):
    labels = np.array([0] * 3 + [1] * 40 + [2] * 40)
    images = RNG.integers(0, 256, (len(labels), 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "cells.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["Basophil", "Eosinophil", "Lymphocyte"]))
    return path


def test_split_warns_about_a_class_too_small_and_strict_refuses(tmp_path):
    path = _few_basophils(tmp_path)
    result = _run("split", path, "--val", "0.1", "--test", "0.1", "-o", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["splits"]["val"]["class_counts"]["Basophil"] == 0
    (warning,) = payload["warnings"]
    assert "'Basophil' has 3 images" in warning and "train: 3, val: 0, test: 0" in warning
    assert "warning: class 'Basophil'" in _run("split", path, "--val", "0.1", "--test", "0.1", "-o", tmp_path / "t").output
    strict = _run("split", path, "--val", "0.1", "--test", "0.1", "-o", tmp_path / "u", "--strict")
    assert strict.exit_code == 1 and "--strict" in strict.output and "'Basophil'" in strict.output
    assert not (tmp_path / "u").exists()  # refused before writing anything


def test_folds_warn_about_a_class_with_fewer_members_than_folds(tmp_path):
    path = _few_basophils(tmp_path)
    payload = json.loads(_run("split", path, "--folds", "5", "-o", tmp_path / "f", "--json").output)
    (warning,) = payload["warnings"]
    assert "'Basophil' has 3 images, too few for --folds 5" in warning and warning.count(": 0") == 2
    strict = _run("split", path, "--folds", "5", "-o", tmp_path / "g", "--strict", "--json")
    assert strict.exit_code == 1 and "Basophil" in json.loads(strict.output)["error"]["message"]
    assert _run("split", path, "--folds", "3", "-o", tmp_path / "h", "--strict").exit_code == 0
