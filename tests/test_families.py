"""toolkit.families: the one table of model families and variants, and everything that derives its choices from it."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from toolkit.cli import main
from toolkit.errors import ConfigError
from toolkit.families import FAMILIES, VARIANTS, family_of, get_variant, pretrained_variants, variant_names
from toolkit.train.config import CHOICES, resolve_config
from toolkit.train.models import create_model, model_spec


def test_import_is_tensorflow_free():
    code = "import toolkit.families, sys; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown variant 'convnext_huge'") as info:
        get_variant("convnext_huge")
    assert all(name in str(info.value) for name in variant_names())
    with pytest.raises(ConfigError, match="unknown variant 'resnet50'"):
        family_of("resnet50")


def test_registry_entries_are_complete():
    assert variant_names()[0] == "convnext_test" and get_variant("convnext_test").imagenet is None
    assert set(pretrained_variants()) == {"convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
                                          "convnext_xlarge", "efficientnetv2_b0", "efficientnetv2_s",
                                          "efficientnetv2_m", "efficientnetv2_l"}
    assert get_variant("efficientnetv2_test").imagenet is None
    for variant in VARIANTS.values():
        family = FAMILIES[variant.family]
        assert variant.name.split("_")[0] == family.name  # arch.py's build_model dispatches on that prefix
        source = family.arch_path.read_text(encoding="utf-8")
        assert f'INPUT_LAYER_NAME = "{family.input_layer}"' in source  # the layer the sandbox captures
        assert "def build_model(spec, onnx_friendly=False)" in source
        assert set(variant.arch) <= set(model_spec(variant.name, 2, ["a", "b"]))
        assert (variant.imagenet is None) == (variant.keras_app is None)
    with pytest.raises(ConfigError, match="input_size must be >= 32"):
        model_spec("convnext_test", 2, ["a", "b"], input_size=family_of("convnext_test").min_input_size - 1)


def test_cli_and_config_choices_come_from_the_registry():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0, result.output
    listed = re.search(r"--model \[([^\]]+)\]", " ".join(result.output.split())).group(1)
    assert tuple(listed.split("|")) == variant_names() == CHOICES["model"]
    for name in variant_names():
        expected = "imagenet" if name in pretrained_variants() else "none"
        assert resolve_config(overrides={"model": name}).weights == expected


def test_pretrained_variants_are_keras_applications_own():
    """Each variant with ImageNet weights: the same architecture, file, URL and hash as its keras.applications class."""
    import keras
    from keras.src.applications import convnext as keras_convnext
    from keras.src.applications import efficientnet_v2 as keras_effnet

    for name in pretrained_variants():
        variant = get_variant(name)
        assert callable(getattr(keras.applications, variant.keras_app))
        size = name.split("_", 1)[1]
        if variant.family == "convnext":
            config = keras_convnext.MODEL_CONFIGS[size]
            assert variant.arch == {"depths": config["depths"], "dims": config["projection_dims"]}
            assert variant.imagenet.file == f"{name}_notop.h5" and variant.imagenet.algorithm == "sha256"
            assert variant.imagenet.url == keras_convnext.BASE_WEIGHTS_PATH + variant.imagenet.file
            assert variant.imagenet.file_hash == keras_convnext.WEIGHTS_HASHES[name][1]
            continue
        keras_name = f"efficientnetv2-{size}"
        blocks = [{"fused": b["conv_type"], "repeats": b["num_repeat"], "kernel": b["kernel_size"], "strides": b["strides"],
                   "expand": b["expand_ratio"], "in": b["input_filters"], "out": b["output_filters"], "se": b["se_ratio"]}
                  for b in keras_effnet.DEFAULT_BLOCKS_ARGS[keras_name]]
        assert variant.arch["blocks"] == blocks  # width/depth coefficients are 1.0 for B0, S, M and L: no rounding
        assert variant.arch["stem_top_filters"] == [blocks[0]["in"], 1280]
        assert variant.imagenet.file == f"{keras_name}_notop.h5" and variant.imagenet.algorithm == "md5"
        assert variant.imagenet.url == keras_effnet.BASE_WEIGHTS_PATH + variant.imagenet.file
        assert variant.imagenet.file_hash == keras_effnet.WEIGHTS_HASHES[keras_name[-2:]][1]  # "b0", "-s", ...


def _randomised(reference, rng) -> None:
    """Every weight far from its init (LayerScale gammas, norms, BatchNorm statistics), so the mapping matters."""
    for var in reference.weights:
        shape, path = tuple(var.shape), getattr(var, "path", var.name)
        if "moving_variance" in path:
            value = rng.uniform(0.5, 2.0, shape)
        else:
            scale = 0.5 if len(shape) == 1 else 1 / np.sqrt(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) * scale + (0.5 if len(shape) == 1 else 0)
        var.assign(value.astype(np.float32))


# the smallest of each family runs in the quick suite; every other pretrained variant is built in full: slow
_QUICK_MAPPINGS = ("convnext_tiny", "efficientnetv2_b0")


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in _QUICK_MAPPINGS else pytest.mark.slow)
                                  for n in pretrained_variants()])
def test_imagenet_mapping_from_a_local_notop_file(tmp_path, name):
    """A randomised keras.applications model of the variant, saved as a legacy notop .h5 (the format Keras
    downloads) and loaded with weights=PATH: our network up to its pooled features (ConvNeXt: the head LayerNorm)
    equals keras' include_top=False, pooling='avg' output on raw 0-255 input (EfficientNetV2 with keras' own
    include_preprocessing, which our input Rescaling replaces)."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    size = family_of(name).min_input_size
    spec = model_spec(name, 3, ["a", "b", "c"], input_size=size)
    reference = family_of(name).module().keras_reference(spec, include_head=True)
    rng = np.random.default_rng(0)
    _randomised(reference, rng)
    path = tmp_path / get_variant(name).imagenet.file
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    model = create_model(spec, weights=str(path))
    pooled = "head_ln" if get_variant(name).family == "convnext" else "head_gap"
    features = keras.Model(model.input, model.get_layer(pooled).output)
    x = rng.integers(0, 256, (4, size, size, 3)).astype(np.float32)
    expected = reference.predict(x, verbose=0)
    assert np.abs(expected).max() > 0.5  # not a degenerate probe
    assert np.abs(features.predict(x, verbose=0) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_freezing_rule_goes_through_the_family():
    model = create_model(model_spec("convnext_test", 3, ["a", "b", "c"]))
    rule = family_of("convnext_test").module()
    total = len(model.trainable_weights)
    rule.set_trainable(model, 1)
    head = len(model.trainable_weights)
    assert 0 < head < total and model.get_layer("head_dense").trainable and not model.get_layer("stem_conv").trainable
    rule.set_trainable(model, 2, unfreeze=1)
    assert head < len(model.trainable_weights) < total
    assert model.get_layer("downsampling_2_conv").trainable and not model.get_layer("downsampling_1_conv").trainable
    rule.set_trainable(model, 2, "all")
    assert len(model.trainable_weights) == total
