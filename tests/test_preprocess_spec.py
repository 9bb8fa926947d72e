"""--preprocess SPEC: every named form computes what its name says (to the last bit where a user would write it the
same way), resizes with toolkit/preprocessing.py's own code, and a file spec is numpy-only, verbatim, and refused
with the offending import and line otherwise. TensorFlow-free."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from toolkit.errors import ConfigError, RuntimeProfileError
from toolkit.preprocess_spec import SPEC_BLOCK_NAME, parse_spec, resize_method, resize_variants
from toolkit.preprocessing import preprocess
from toolkit.submission.render import embedded_block, extract_blocks

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
FRACTIONAL = (IMAGES.astype(np.float32) + RNG.uniform(0, 1, IMAGES.shape).astype(np.float32)).clip(0, 255)


def _f32(x):
    return np.asarray(x, dtype=np.float32)


# spec -> what a user writes in a notebook for it, on float32 input
NAMED = {
    "raw": lambda x: _f32(x),
    "scale:1/255": lambda x: _f32(x) / 255.0,
    "scale:1/127.5,offset:-1": lambda x: _f32(x) / 127.5 - 1,
    "scale:0.5+offset:3": lambda x: _f32(x) * 0.5 + 3,
    "bgr": lambda x: _f32(x)[..., ::-1],
    "resize:64:bilinear": lambda x: preprocess(x, 64, "bilinear"),
    "resize:120:nearest": lambda x: preprocess(x, 120, "nearest"),
    "resize:64:bilinear+scale:1/255": lambda x: preprocess(x, 64, "bilinear") / 255.0,
    "bgr+resize:48:nearest+scale:1/127.5,offset:-1": lambda x: preprocess(_f32(x)[..., ::-1], 48, "nearest") / 127.5 - 1,
}


@pytest.mark.parametrize("text", sorted(NAMED))
@pytest.mark.parametrize("images", [IMAGES, FRACTIONAL], ids=["uint8", "float32"])
def test_named_form_is_bit_identical_to_the_notebook_expression(text, images):
    spec = parse_spec(text)
    out = spec.apply(images)
    want = NAMED[text](images)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == want.shape
    assert out.tobytes() == np.ascontiguousarray(want, np.float32).tobytes()
    assert spec.input_size == (int(text.split("resize:")[1].split(":")[0]) if "resize" in text else None)
    assert spec.name == SPEC_BLOCK_NAME and spec.text == text


def test_one_image_becomes_a_batch_and_the_input_is_not_modified():
    spec = parse_spec("bgr+scale:1/255")
    image = FRACTIONAL[0].copy()
    out = spec.apply(image)
    assert out.shape == (1, 96, 96, 3) and np.array_equal(image, FRACTIONAL[0])


def test_generated_source_is_numpy_only_and_standalone(tmp_path):
    """The generated text passes the file-spec checker, and as a file spec it computes the same bytes."""
    spec = parse_spec("resize:64:bilinear+scale:1/255")
    assert "def _resize(" in spec.source and "from toolkit" not in spec.source
    path = tmp_path / "generated.py"
    path.write_text(spec.source)
    again = parse_spec(str(path))
    assert again.source == spec.source and again.sha256() == spec.sha256()
    assert again.apply(IMAGES).tobytes() == spec.apply(IMAGES).tobytes()


def test_generated_source_gives_the_same_bytes_in_the_pinned_runtime(tmp_path):
    """Run the text in the an2dl-2024 runtime's numpy, with cbtool out of reach: same bytes as here."""
    from toolkit.runtime.profiles import get_profile
    from toolkit.runtime.sandbox import runtime_python

    try:
        python = runtime_python(get_profile("an2dl-2024"))
    except RuntimeProfileError as exc:  # pragma: no cover - only without a registry
        pytest.skip(f"runtime unavailable: {exc}")
    spec = parse_spec("resize:72:bilinear+bgr+scale:1/127.5,offset:-1")
    (tmp_path / "spec.py").write_text(spec.source)
    np.save(tmp_path / "x.npy", FRACTIONAL)
    code = "import numpy as np, spec; np.save('y.npy', spec.preprocess(np.load('x.npy')))"
    subprocess.run([python, "-I", "-c", f"import sys; sys.path.insert(0, '.'); {code}"], cwd=tmp_path, check=True, timeout=60)
    assert np.load(tmp_path / "y.npy").tobytes() == spec.apply(FRACTIONAL).tobytes()


def test_hashes_survive_embedding_in_model_py(tmp_path):
    """The from-keras model.py embeds `source` as block `name`: the block's body hash is the spec's sha256."""
    no_newline = tmp_path / "prep.py"
    no_newline.write_text("import numpy as np\n\ndef preprocess(images):\n    return np.asarray(images, np.float32) / 2")
    for spec in (parse_spec("scale:1/255"), parse_spec(str(no_newline))):
        block = extract_blocks("x = 1\n" + embedded_block(spec.name, spec.source) + "\n")[spec.name]
        assert block["sha256_body"] == block["sha256_marker"] == spec.sha256() == spec.to_dict()["sha256"]
        assert set(spec.to_dict()) == {"text", "name", "sha256", "input_size"}
    assert parse_spec("scale:1/255").sha256() == parse_spec(" scale:1/255 ").sha256() != parse_spec("raw").sha256()


def test_resize_variants_swap_only_the_method():
    spec = parse_spec("resize:64:bilinear+scale:1/255")
    assert resize_method(spec) == "bilinear" and resize_method(parse_spec("scale:1/255")) is None
    (method, other), = resize_variants(spec).items()
    assert method == "nearest" and other.apply(IMAGES).tobytes() == (preprocess(IMAGES, 64, "nearest") / 255.0).tobytes()
    assert resize_variants(parse_spec("bgr")) == {}


@pytest.mark.parametrize("text, fragment", [
    ("", "expected one of"),
    ("foo", "step 'foo' is not one of"),
    ("raw+bgr", "'raw' stands alone"),
    ("scale:abc", "needs a number or a fraction"),
    ("scale:1/0", "needs a number or a fraction"),
    ("resize:0:bilinear", "expected resize:SIZE"),
    ("resize:64:area", "expected resize:SIZE"),
    ("missing.py", "no such file"),
])
def test_bad_named_spec_is_one_line(text, fragment):
    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_file_spec_is_copied_verbatim_and_applied(tmp_path):
    text = ("import numpy as np\nfrom numpy import float32\n\n\n"
            "def preprocess(images):\n    x = np.asarray(images, float32)\n    return (x[..., ::-1] - 127.5) / 127.5\n")
    path = tmp_path / "my_prep.py"
    path.write_text(text)
    spec = parse_spec(str(path))
    assert spec.source == text and spec.text == str(path) and spec.input_size is None
    expected = (IMAGES.astype(np.float32)[..., ::-1] - 127.5) / 127.5
    assert spec.apply(IMAGES).tobytes() == np.ascontiguousarray(expected).tobytes()


@pytest.mark.parametrize("source, fragment", [
    ("import numpy as np\nimport cv2\n\ndef preprocess(images):\n    return images\n", ":2: imports 'cv2'"),
    ("import numpy as np\n\ndef preprocess(images):\n    from PIL import Image\n    return images\n", ":4: imports 'PIL'"),
    ("import numpy as np\n\ndef preprocess(images):\n    return __import__('os')\n", ":4: imports '__import__(...)'"),
    ("import numpy as np\nfrom . import helpers\n\ndef preprocess(images):\n    return images\n", ":2: imports '.'"),
    ("import numpy as np\n\ndef prepare(images):\n    return images\n", "expected a top-level function preprocess(images)"),
    ("def preprocess(images:\n", ":1: not valid Python"),
])
def test_file_spec_refusals_name_file_import_and_line(tmp_path, source, fragment):
    path = tmp_path / "prep.py"
    path.write_text(source)
    with pytest.raises(ConfigError) as info:
        parse_spec(str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message


@pytest.mark.parametrize("body, fragment", [
    ("return np.asarray(images, np.float64)", "float64"),
    ("return np.asarray(images, np.float32)[..., 0]", "(3, 96, 96)"),
    ("raise ValueError('boom')", "raised ValueError: boom"),
])
def test_file_spec_output_is_checked(tmp_path, body, fragment):
    path = tmp_path / "prep.py"
    path.write_text(f"import numpy as np\n\ndef preprocess(images):\n    {body}\n")
    with pytest.raises(ConfigError) as info:
        parse_spec(str(path)).apply(IMAGES)
    assert fragment in str(info.value) and str(path) in str(info.value)
