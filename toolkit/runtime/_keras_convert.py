"""cbtool conversion child: rebuild a model from a config in the TARGET runtime's Keras, load its weights, save it in
that Keras' native format, load the saved file back and return its probabilities on the probe images.

Run by `build-submission --from-keras` (toolkit/submission/from_keras.py) with the profile's interpreter, in a clean
environment like the sandbox child; imports nothing from cbtool, only the standard library at the top.

    python -I _child.py REQUEST.json

REQUEST.json: {"config": model config JSON file, "weights": npz of arrays w00000... in `model.weights` order,
"probes": float32 .npy, "output": the file to save (.keras or .h5), "probs": .npy to write, "result": JSON to write,
"batch_size": int}. The result: {"ok", "phase", "error", "keras_version", "tensorflow_version", "n_weights"}.
"""

import json
import sys
import traceback

RESULT = {"ok": False, "phase": "start", "error": None}


def main(request_path):
    with open(request_path) as handle:
        request = json.load(handle)
    try:
        _convert(request)
        RESULT["ok"] = True
    except Exception as exc:  # noqa: BLE001 - the parent turns it into one line
        RESULT["error"] = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[-1] if str(exc).strip() else "")
        RESULT["traceback"] = traceback.format_exc()[-3000:]
    with open(request["result"], "w") as handle:
        json.dump(RESULT, handle)


def _convert(request):
    import importlib.metadata

    import numpy as np

    RESULT["phase"] = "import"
    import tensorflow as tf
    from tensorflow import keras

    RESULT["tensorflow_version"] = tf.__version__
    RESULT["keras_version"] = importlib.metadata.version("keras")
    RESULT["phase"] = "rebuild"
    with open(request["config"]) as handle:
        model = keras.models.model_from_json(handle.read())
    RESULT["phase"] = "weights"
    with np.load(request["weights"], allow_pickle=False) as data:
        arrays = [data[key] for key in sorted(data.files)]
    _check_shapes(model, arrays)
    model.set_weights(arrays)
    RESULT["n_weights"] = len(arrays)
    RESULT["phase"] = "save"
    model.save(request["output"])
    RESULT["phase"] = "reload"
    saved = keras.models.load_model(request["output"], compile=False)
    RESULT["phase"] = "predict"
    probes = np.load(request["probes"], allow_pickle=False)
    size = int(request.get("batch_size") or 32)
    outs = [np.asarray(saved(probes[i:i + size], training=False)) for i in range(0, len(probes), size)]
    np.save(request["probs"], np.concatenate(outs, axis=0).astype(np.float64), allow_pickle=False)
    RESULT["phase"] = "done"


def _check_shapes(model, arrays):
    """Same count and shapes, in order, or a one-line error naming the first mismatch."""
    weights = model.weights
    if len(weights) != len(arrays):
        raise ValueError("the rebuilt model has %d weights, the original %d" % (len(weights), len(arrays)))
    for index, (weight, array) in enumerate(zip(weights, arrays)):
        if tuple(weight.shape) != tuple(array.shape):
            name = getattr(weight, "path", None) or weight.name
            raise ValueError("weight %d (%s): the rebuilt model has shape %s, the original %s"
                             % (index, name, tuple(weight.shape), tuple(array.shape)))


if __name__ == "__main__":
    main(sys.argv[1])
