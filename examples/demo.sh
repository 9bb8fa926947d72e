#!/usr/bin/env bash
# The README's main job on the bundled demo data, end to end:
# demo data -> inspect -> clean -> split -> train -> export -> build-submission -> validate-preprocessing -> simulate --shift
# Usage: bash examples/demo.sh [OUT_DIR]   (expects `cbtool` on PATH; `make demo` sets that up)
# The same commands as the recorded walkthrough examples/an2dl-2024/README.md (tests/test_docs.py checks it), whose
# outputs show what each step prints.
set -euo pipefail
OUT="${1:-demo_out}"
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
step() { printf '\n=== %s\n' "$*" >&2; }

step "1/9 demo data (synthetic 8-class 96x96 cells with planted duplicates, conflicts and memes)"
cbtool demo-data -o "$OUT/training_set.npz" --n 1200

step "2/9 inspect"
cbtool inspect "$OUT/training_set.npz"

step "3/9 clean (dedup, conflicting labels, meme clusters; report with contact sheets)"
cbtool clean "$OUT/training_set.npz" -o "$OUT/training_clean.npz" --report "$OUT/clean_report"

step "4/9 split (stratified, group-aware)"
cbtool split "$OUT/training_clean.npz" --val 0.15 --test 0.15 --seed 0 -o "$OUT/split"

step "5/9 train (convnext_test on CPU; a few minutes)"
rm -rf "$OUT/run"  # a re-run starts a fresh run dir (train refuses to overwrite one)
cbtool train "$OUT/split/train.npz" --val "$OUT/split/val.npz" --config examples/demo_config.toml -o "$OUT/run"

step "6/9 export (portable weights + spec, .keras, ONNX with parity check)"
cbtool export "$OUT/run" -o "$OUT/export" --format portable,keras,onnx

step "7/9 build-submission (an2dl-2024: the first run creates the pinned TF 2.17 / Keras 3.4.1 runtime venv)"
cbtool runtime create an2dl-2024
cbtool build-submission "$OUT/export" -o "$OUT/submission.zip" --profile an2dl-2024 --tta flip

step "8/9 validate-preprocessing (inside the grader runtime)"
cbtool validate-preprocessing "$OUT/submission.zip" --run "$OUT/run" --profile an2dl-2024

step "9/9 simulate the grader on the held-out split, with the corruption suite"
cbtool simulate "$OUT/submission.zip" --data "$OUT/split/test.npz" --profile an2dl-2024 --shift \
    --report "$OUT/report"

python - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
val = json.loads((out / "run" / "metrics.json").read_text())["accuracy"]
sim = json.loads((out / "report" / "details.json").read_text())
print()
print(f"validation accuracy (training process): {val:.4f}")
print(f"held-out accuracy in the an2dl-2024 sandbox: {sim['scores']['accuracy']:.4f}")
print(f"shifted mean accuracy (corruption suite):   {sim['shift']['mean_accuracy']:.4f}")
print(f"report: {out / 'report' / 'report.html'}")
PY
