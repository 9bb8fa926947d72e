"""Student-style submissions in the pinned an2dl-2024 runtime: the official 2024 template's pattern (a bare
'weights.keras' loaded by tfk.models.load_model, argmax in predict), with weights saved at test time by the runtime's
own Keras 3.4.1 and by this process' newer Keras.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from toolkit.cli import main
from toolkit.errors import RuntimeProfileError
from toolkit.runtime.profiles import get_profile

TEMPLATE_2024 = '''import numpy as np
import tensorflow as tf
from tensorflow import keras as tfk


class Model:
    def __init__(self):
        self.neural_network = tfk.models.load_model('weights.keras')

    def predict(self, X):
        preds = self.neural_network.predict(X, verbose=0)
        if len(preds.shape) == 2:
            preds = np.argmax(preds, axis=1)
        return preds
'''
SAVE = '''import sys, keras
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((96, 96, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3, strides=4),
                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8, activation="softmax")])
m.save(sys.argv[1])
print(keras.__version__)
'''


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """weights.keras saved by the an2dl-2024 runtime's Keras ('runtime') and by this process' Keras ('newer')."""
    from toolkit.runtime.sandbox import runtime_python

    try:
        python = runtime_python(get_profile("an2dl-2024"))
    except RuntimeProfileError as exc:  # pragma: no cover - only without a registry
        pytest.skip(f"the an2dl-2024 runtime is unavailable: {exc}")
    folder = tmp_path_factory.mktemp("students")
    (folder / "save.py").write_text(SAVE)
    out = {}
    for label, interpreter in (("runtime", str(python)), ("newer", sys.executable)):
        path = folder / f"{label}.keras"
        proc = subprocess.run([interpreter, str(folder / "save.py"), str(path)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[label] = path
    return out


def _zip(tmp_path: Path, weights: Path) -> Path:
    path = tmp_path / "submission.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", TEMPLATE_2024)
        zf.write(weights, "weights.keras")
    return path


def _simulate(zip_path: Path, tmp_path: Path) -> tuple[int, dict]:
    data = tmp_path / "heldout.npz"
    rng = np.random.default_rng(0)
    np.savez(data, images=rng.integers(0, 256, (9, 96, 96, 3), dtype=np.uint8), labels=(np.arange(9) % 8).reshape(-1, 1))
    result = CliRunner().invoke(main, ["simulate", str(zip_path), "--data", str(data), "--profile", "an2dl-2024", "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_the_official_2024_template_passes_where_its_grader_ran_with_a_warning(tmp_path, weights):
    code, out = _simulate(_zip(tmp_path, weights["runtime"]), tmp_path)
    assert code == 0 and out["status"] == "ok", out.get("failure")
    warning = next(w for w in out["warnings"] if "'weights.keras'" in w)
    assert "os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights.keras')" in warning
    assert "weights.keras" in out["sandbox"]["relative_paths"]  # the run saw the bare open too


def test_a_keras_file_from_a_newer_keras_names_both_versions_and_the_rejected_key_first(tmp_path, weights):
    code, out = _simulate(_zip(tmp_path, weights["newer"]), tmp_path)
    assert code == 3 and out["failure"]["kind"] == "load_error"
    import keras

    first = out["failure"]["message"].splitlines()[0]
    assert f"weights.keras was saved by Keras {keras.__version__}" in first
    assert "the an2dl-2024 runtime has Keras 3.4.1 and rejects 'input_axes'" in first
    assert "--from-keras" in first
