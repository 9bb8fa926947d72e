"""A tiny finished run dir, laid out as `cbtool train` does (toolkit/artifacts.py RunDir), for export and portability tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.artifacts import RunDir
from toolkit.fsutil import write_json

# Eight classes, as the an2dl-2024 contract fixes (Contract.num_classes): its `check` refuses any other count.
CLASSES = ["basophil", "eosinophil", "lymphocyte", "erythroblast", "ig", "monocyte", "neutrophil", "platelet"]


def make_run_dir(run_dir: Path, variant: str = "convnext_test", input_size: int = 96, n_probe: int = 8, seed: int = 0) -> Path:
    """Build `variant` with random (non-trivial) weights, save the best weights, the JSON files and the probe."""
    from toolkit.families import build_model
    from toolkit.preprocessing import preprocess
    from toolkit.provenance import preprocessing_sha256
    from toolkit.train.models import model_spec

    import keras

    spec = model_spec(variant, len(CLASSES), CLASSES, input_size=input_size)
    keras.utils.set_random_seed(seed)  # the head's Glorot init too: the same run dir in every process and order
    model = build_model(spec)
    rng = np.random.default_rng(seed)
    # Default init makes every block ~identity (layer scale 1e-6); perturb all weights so blocks matter.
    model.set_weights([w + rng.standard_normal(w.shape).astype(np.float32) * 0.05 for w in model.get_weights()])
    paths = RunDir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(paths.best_weights))
    write_json(paths.model_spec, spec)
    write_json(paths.classes, {"class_names": CLASSES})
    write_json(paths.preprocessing, {"input_size": input_size, "resize": "bilinear", "source_sha256": preprocessing_sha256()})
    # Probe images whose top-2 margin is widest: an untrained model has near-ties that fp16 rounding (~1e-3) or
    # another TensorFlow build (~1e-6) could flip, and argmax checks must test the export, not luck.
    candidates = rng.integers(0, 256, (4 * n_probe, 96, 96, 3), dtype=np.uint8)
    scores = np.asarray(model.predict(preprocess(candidates, input_size), verbose=0), dtype=np.float32)
    top2 = np.sort(scores, axis=1)[:, -2:]
    chosen = np.sort(np.argsort(top2[:, 0] - top2[:, 1], kind="stable")[:n_probe])
    images, probs = candidates[chosen], scores[chosen]
    np.savez(paths.probe, images=images, labels=(np.arange(n_probe) % len(CLASSES)).astype(np.int64), probs=probs)
    return run_dir
