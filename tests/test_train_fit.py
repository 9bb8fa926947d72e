"""Training on CPU with the real convnext_test network: it learns, the run dir is complete, resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest

from train_data import shapes_dataset
from toolkit.errors import ConfigError, DataError
from toolkit.train import pipeline
from toolkit.train.config import resolve_config

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow

from toolkit.train.fit import make_optimizer, train  # noqa: E402

RUN_FILES = {"config.json", "model_spec.json", "classes.json", "preprocessing.json", "best.weights.h5", "history.json",
             "metrics.json", "confusion_matrix.png", "learning_curves.png", "probe.npz", "state"}


def _config(**kw):
    base = dict(model="convnext_test", weights="none", epochs="4", batch_size=16, lr1=3e-3, lr2=3e-3,
                warmup_epochs=0.5, augment="basic", patience=0, val_fraction=0.25, seed=1)
    base.update(kw)
    return resolve_config(overrides=base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """convnext_test for 6 short epochs on 218 genuine demo images (8 classes)."""
    from toolkit.data.demo import make_demo

    run = tmp_path_factory.mktemp("runs") / "run"
    demo, truth = make_demo(240, seed=0, meme_copies=(0, 0))
    data = demo.subset(truth["genuine"])
    result = train(data, None, _config(epochs="6"), run, verbose=False)
    return run, result, data


def test_validation_accuracy_rises_above_chance(trained):
    run, result, _ = trained
    assert result.completed and result.epochs_done == 6
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 53  # a quarter of each class, stratified
    assert metrics["accuracy"] > 0.5, metrics  # chance is 0.125; measured 0.87-0.91 over seeds
    assert metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3, 4, 5, 6] and set(history["phase"]) == {2}  # nothing pretrained: no phase 1
    assert max(history["val_accuracy"]) == pytest.approx(result.best_val_accuracy)
    assert history["loss"][-1] < history["loss"][0]


def test_run_dir_layout_and_probe_reproduces(trained):
    from toolkit.arch import build_model
    from toolkit.preprocessing import preprocess
    from toolkit.provenance import preprocessing_sha256

    run, _, data = trained
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    spec = json.loads((run / "model_spec.json").read_text())
    assert spec["variant"] == "convnext_test" and spec["num_classes"] == 8 and spec["input_size"] == 96
    assert json.loads((run / "classes.json").read_text()) == {"class_names": data.class_names}
    assert json.loads((run / "preprocessing.json").read_text()) == {
        "input_size": 96, "resize": "bilinear", "source_sha256": preprocessing_sha256()}
    assert json.loads((run / "config.json").read_text())["model"] == "convnext_test"
    with np.load(run / "probe.npz") as probe:
        images, labels, probs = probe["images"], probe["labels"], probe["probs"]
    assert images.dtype == np.uint8 and images.shape == (32, 96, 96, 3) and set(labels.tolist()) == set(range(8))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    model = build_model(spec)
    model.load_weights(run / "best.weights.h5")
    again = model.predict(preprocess(images), verbose=0)
    assert np.abs(again - probs).max() <= 1e-5


def test_resume_continues_the_epoch_count(tmp_path):
    data = shapes_dataset(n_per_class=8, num_classes=3, seed=2)
    config = _config(epochs="1,2", augment="none")  # phase 1 then phase 2
    straight = train(data, None, config, tmp_path / "straight", verbose=False)
    first = train(data, None, config, tmp_path / "run", verbose=False, stop_after_epochs=2)
    assert not first.completed and first.epochs_done == 2 and first.metrics is None
    assert not (tmp_path / "run" / "metrics.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(data, None, config, tmp_path / "run", verbose=False)
    with pytest.raises(DataError, match="differ"):
        train(shapes_dataset(n_per_class=8, num_classes=3, seed=3), None, None, tmp_path / "run", resume=True, verbose=False)
    resumed = train(data, None, None, tmp_path / "run", resume=True, verbose=False)
    assert resumed.completed and resumed.epochs_this_run == 1 and resumed.epochs_done == 3
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    reference = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3] and history["phase"] == [1, 2, 2]
    # the optimizer step count came back with the state: the schedule continues where it stopped
    np.testing.assert_allclose(history["lr"], reference["lr"], rtol=1e-6)
    assert straight.completed
    with pytest.raises(ConfigError, match="already finished"):
        train(data, None, None, tmp_path / "run", resume=True, verbose=False)


def test_weight_decay_exclusion():
    """(The phase freezing rule is the family's: tests/test_families.py.)"""
    from toolkit.train.models import create_model, model_spec

    model = create_model(model_spec("convnext_test", 3, ["a", "b", "c"]), weights="none")
    # zero gradients: AdamW changes only the variables it decays
    optimizer = make_optimizer(_config(weight_decay=0.5), 0.1, total_steps=10, warmup_steps=0)
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    for var, old in zip(variables, before):
        changed = not np.array_equal(var.numpy(), old)
        is_no_decay = var.name in ("bias", "gamma", "beta") or "layer_scale" in var.path
        assert changed != is_no_decay or not old.any(), var.path


def test_pipeline_is_deterministic_and_weighted():
    data = shapes_dataset(n_per_class=6, num_classes=3, seed=4)
    weights = pipeline.class_weight_vector(np.array([0, 0, 0, 1]), 3, "balanced")
    np.testing.assert_allclose(weights, [4 / 6, 2.0, 0.0])  # n / (present classes * count), absent -> 0
    from toolkit.train.augment import Augmenter

    def batches(seed):
        ds = pipeline.train_dataset(data.images, data.labels, 3, input_size=64, resize="bilinear", batch_size=4, seed=seed,
                                    start_epoch=0, end_epoch=2, augmenter=Augmenter("robust", seed),
                                    class_weights=np.array([1.0, 2.0, 3.0], np.float32))
        return [tuple(t.numpy() for t in b) for b in ds]

    a, b, c = batches(5), batches(5), batches(6)
    assert len(a) == 2 * (18 // 4)
    for (x1, y1, w1), (x2, y2, w2) in zip(a, b):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        assert x1.shape == (4, 64, 64, 3) and x1.dtype == np.float32 and 0 <= x1.min() and x1.max() <= 255
        np.testing.assert_allclose(w1, y1 @ np.array([1.0, 2.0, 3.0]))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))
    # epoch 2 is a different permutation from epoch 1
    assert not np.array_equal(np.concatenate([p[1] for p in a[:4]]), np.concatenate([p[1] for p in a[4:]]))


def test_stratified_split():
    labels = np.repeat([0, 1, 2], [20, 10, 1])
    train_idx, val_idx = pipeline.stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(31))
    assert np.bincount(labels[val_idx], minlength=3).tolist() == [4, 2, 0]  # a singleton class stays in training
    again, _ = pipeline.stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(train_idx, again)


def test_validation_file_labels_map_onto_training_classes(tmp_path):
    from toolkit.train.fit import load_training_data

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 96, 96, 3)).astype(np.float32)
    np.savez(tmp_path / "train.npz", data=images, labels=np.array(["a", "b", "c", "a", "b", "c"]))
    np.savez(tmp_path / "val.npz", data=images[:3], labels=np.array(["c", "b", "c"]))  # no 'a': names sort to [b, c]
    np.savez(tmp_path / "odd.npz", data=images[:2], labels=np.array(["a", "z"]))
    train_set, val_set = load_training_data(tmp_path / "train.npz", tmp_path / "val.npz", allow_pickle=True)
    assert val_set.class_names == ["a", "b", "c"] and val_set.labels.tolist() == [2, 1, 2]
    with pytest.raises(DataError, match="'z'"):
        load_training_data(tmp_path / "train.npz", tmp_path / "odd.npz", allow_pickle=True)
