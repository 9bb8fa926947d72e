"""The portable export loads in the graders' pinned runtimes, from the copied arch.py source alone.

- an2dl-2024 (tensorflow-cpu 2.17.0, keras 3.4.1): model.weights.h5 saved by our newer Keras, and weights.npz.
- an2dl-2023 (tensorflow-cpu 2.15.1, Keras 2 tf.keras): weights.npz.
Both must give the probe's argmax and a max abs diff <= 1e-5. The venvs are created with pip on first use and cached;
the test skips only when pip cannot reach a package registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import ROOT
from export_data import make_run_dir
from toolkit.errors import RuntimeProfileError
from toolkit.export import export_run

TOLERANCE = 1e-5

# Runs inside the pinned venv: imports only numpy, tensorflow, and the two files copied next to it.
CHECK = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import arch, preprocessing
import tensorflow as tf
export = sys.argv[2]
spec = json.load(open(export + "/model_spec.json"))
prep = json.load(open(export + "/preprocessing.json"))
probe = np.load(export + "/probe.npz")
reference = np.load(sys.argv[4]) if len(sys.argv) > 4 else probe["probs"]
x = preprocessing.preprocess(probe["images"], prep["input_size"], prep["resize"])
result = {"tf": tf.__version__, "keras": getattr(arch.keras, "__version__", "tf.keras " + tf.__version__)}
for fmt in sys.argv[3].split(","):
    model = arch.build_model(spec)
    if fmt == "h5":
        model.load_weights(export + "/model.weights.h5")
    else:
        arch.load_weights_npz(model, export + "/weights.npz")
    probs = np.asarray(model.predict(x, verbose=0))
    result[fmt] = {"argmax_equal": bool((probs.argmax(1) == reference.argmax(1)).all()),
                   "max_abs_diff": float(np.abs(probs - reference).max()),
                   "max_abs_diff_vs_fp32_probe": float(np.abs(probs - probe["probs"]).max())}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("portable")
    run = make_run_dir(base / "run", n_probe=8)
    export_run(run, base / "export", ["portable"])
    export_run(run, base / "export16", ["portable"], fp16=True)
    return base / "export"


def _runtime_python(name: str):
    from toolkit.runtime.profiles import BUILTIN
    from toolkit.runtime.venv import ensure_venv

    try:
        return ensure_venv(name, list(BUILTIN[name].packages))
    except RuntimeProfileError as exc:
        if "registry reachable" in str(exc):
            pytest.skip(f"cannot create the {name} runtime venv: pip cannot reach a package registry ({exc})")
        raise


def _check_in(python, export_dir, tmp_path, formats: str, reference=None) -> dict:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "toolkit" / "arch.py", src / "arch.py")
    shutil.copy(ROOT / "toolkit" / "preprocessing.py", src / "preprocessing.py")
    args = [str(python), "-c", CHECK, str(src), str(export_dir), formats]
    if reference is not None:
        args.append(str(reference))
    proc = subprocess.run(args, capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(tmp_path)},
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _assert_matches(result: dict, formats: str) -> None:
    for fmt in formats.split(","):
        assert result[fmt]["argmax_equal"], result
        assert result[fmt]["max_abs_diff"] <= TOLERANCE, result


def test_portable_export_in_keras_3_4_1_runtime(export_dir, tmp_path):
    result = _check_in(_runtime_python("an2dl-2024"), export_dir, tmp_path, "h5,npz")
    assert result["tf"] == "2.17.0" and result["keras"] == "3.4.1"
    _assert_matches(result, "h5,npz")


def test_weights_npz_in_keras_2_runtime(export_dir, tmp_path):
    result = _check_in(_runtime_python("an2dl-2023"), export_dir, tmp_path, "npz")
    assert result["tf"] == "2.15.1" and result["keras"].startswith("tf.keras")
    _assert_matches(result, "npz")


def test_fp16_weights_load_in_keras_3_4_1_runtime(export_dir, tmp_path):
    """float16 files are cast back to the float32 variables by Keras 3.4.1 (h5) and by arch.load_weights_npz.

    The reference is the same fp16 file loaded in this process: on an untrained probe model the class probabilities
    are nearly tied, so fp16 rounding alone may flip an argmax against the fp32 probe (seen in CI: 4.2e-4 apart).
    What must hold is that the old runtime reads the fp16 file exactly as the newest Keras does.
    """
    import numpy as np

    from toolkit import arch
    from toolkit.preprocessing import preprocess

    export16 = export_dir.with_name("export16")
    spec = json.loads((export16 / "model_spec.json").read_text())
    prep = json.loads((export16 / "preprocessing.json").read_text())
    with np.load(export16 / "probe.npz") as probe:
        images = probe["images"]
    model = arch.build_model(spec)
    arch.load_weights_npz(model, export16 / "weights.npz")
    reference = np.asarray(model.predict(preprocess(images, prep["input_size"], prep["resize"]), verbose=0))
    np.save(tmp_path / "reference.npy", reference)
    result = _check_in(_runtime_python("an2dl-2024"), export16, tmp_path, "h5,npz", tmp_path / "reference.npy")
    _assert_matches(result, "h5,npz")
    for fmt in ("h5", "npz"):
        assert 0 < result[fmt]["max_abs_diff_vs_fp32_probe"] < 1e-2, result
