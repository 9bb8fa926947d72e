"""cbtool sandbox child: imports a submission's model.py the way the grader does, and runs it on .npy inputs.

This file is copied into the sandbox's program folder and run there by the runtime profile's interpreter, so it
imports nothing from cbtool (cbtool is not importable in the child) and only the standard library at the top.

    python -I _child.py REQUEST.json

REQUEST.json: {"submission_dir", "contract": {class_name, init_args, input, methods, ...} (toolkit/contract.py's
record as a dict), "inputs": [{"name", "file"}], "fit": {"x", "y"} or null, "output_dir", "status_file",
"capture": bool, "capture_layer": the network's input layer named by the zip's manifest or null,
"block_modules": [...]}. An input with "globals": {name: value} is an extra the grader never asks for (simulate's
TTA comparison): model.py's module globals are set around its predict and restored, and a failure skips it
(recorded under "skipped") instead of failing the run.

The status file is rewritten (atomically) after every phase, so the parent knows how far a child got even when it
was killed or called os._exit; it also carries the versions of python, numpy, tensorflow, keras and onnxruntime as
imported here.
"""

import importlib.abc
import importlib.util
import json
import os
import sys
import time
import traceback
import types

STATUS = {"phase": "start", "done": False, "failure": None, "timing": {"predict_s": {}}, "outputs": {}, "captured": {},
          "skipped": {}}


def main(request_path):
    with open(request_path) as handle:
        request = json.load(handle)
    global STATUS_FILE
    STATUS_FILE = request["status_file"]
    _block(request.get("block_modules") or [])
    submission = request["submission_dir"]
    sys.path.insert(0, submission)  # as the grader's ingestion program: model.py's siblings are importable
    _watch_relative_paths()
    capture = _Capture(request["output_dir"], request.get("capture_layer")) if request.get("capture") else None
    module = _phase("import", "import_error", lambda: _import_model(submission))
    if module is None:
        return
    contract = request["contract"]
    instance = _phase("load", "load_error", lambda: _load(module, contract, submission))
    if instance is None:
        return
    if capture is not None:
        STATUS["capture"] = capture.install(instance, module)
    if "fit" in contract["methods"] and request.get("fit"):
        if _phase("fit", "fit_error", lambda: _fit(instance, request["fit"], contract), returns_none=True) is None:
            return
    _write_status("predict")
    for index, item in enumerate(request["inputs"]):
        key = "in_%03d" % index  # per input, not per file: the parent writes an array fed several times once
        if capture is not None:
            capture.start(key)
        started = time.perf_counter()
        if item.get("globals") is not None:
            out = _predict_extra(module, instance, item, contract)
        else:
            out = _phase("predict", "predict_error", lambda: _predict(instance, item, contract), item["name"])
        STATUS["timing"]["predict_s"][item["name"]] = time.perf_counter() - started
        if capture is not None:
            STATUS["captured"][item["name"]] = capture.files.get(key, [])
            if len(capture.wrapped) > 1:  # an ensemble: every network's calls, in the order they were wrapped
                STATUS.setdefault("captured_nets", {})[item["name"]] = capture.nets.get(key, [])
        if out is None and item["name"] in STATUS["skipped"]:
            _write_status("predict")
            continue
        if out is None:
            _write_status("predict")
            return
        path = os.path.join(request["output_dir"], "out_" + key + ".npy")
        import numpy as np

        np.save(path, out, allow_pickle=False)
        STATUS["outputs"][item["name"]] = path
        _write_status("predict")
    STATUS["done"] = True
    _write_status("done")


def _phase(phase, kind, fn, name=None, returns_none=False):
    """Run one phase; record its time and any failure (SystemExit included: a submission must not exit).

    Returns fn's result, or None on failure; with `returns_none` (a phase whose result does not matter) True on success.
    """
    _write_status(phase)
    started = time.perf_counter()
    try:
        result = fn()
        if returns_none:
            result = True
    except SystemExit as exc:
        _fail("exit", phase, "the submission called sys.exit(%r) during %s%s" % (exc.code, phase, _about(name)))
        return None
    except BaseException as exc:  # noqa: BLE001 - everything the submission raises is a failure to report
        _fail(kind, phase, "%s: %s%s" % (type(exc).__name__, exc, _about(name)), _submission_traceback(exc))
        return None
    if phase in ("import", "load", "fit"):
        STATUS["timing"][phase + "_s"] = time.perf_counter() - started
    return result


def _submission_traceback(exc):
    """The traceback without this runner's own frames, so it reads as the grader's log would."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _about(name):
    return " (input %r)" % name if name else ""


def _fail(kind, phase, message, trace=""):
    STATUS["failure"] = {"kind": kind, "phase": phase, "message": message, "traceback": trace[-6000:]}
    if trace:
        sys.stderr.write(trace)
    _write_status(phase)


def _import_model(submission):
    path = os.path.join(submission, "model.py")
    if not os.path.isfile(path):
        raise ImportError("no model.py at the root of the submission")
    spec = importlib.util.spec_from_file_location("model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    return module


def _load(module, contract, submission):
    name = contract["class_name"]
    cls = getattr(module, name, None)
    if cls is None:
        found = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == "model")
        raise AttributeError("model.py defines no class %r (the profile's contract calls %s(%s)); classes found: %s"
                             % (name, name, ", ".join(contract["init_args"]), found or "none"))
    args = [submission if arg == "path" else None for arg in contract["init_args"]]
    return cls(*args)


def _as_input(x, contract):
    """X as the grader hands it over: a numpy array, or a tf.Tensor."""
    if contract.get("input") == "tensor":
        import tensorflow as tf

        return tf.convert_to_tensor(x)
    return x


def _fit(instance, fit, contract):
    import numpy as np

    x = np.load(fit["x"], allow_pickle=False)
    y = np.load(fit["y"], allow_pickle=False)
    instance.fit(_as_input(x, contract), y)


def _predict(instance, item, contract):
    import numpy as np

    x = np.load(item["file"], allow_pickle=False)
    out = instance.predict(_as_input(x, contract))
    if hasattr(out, "numpy"):
        out = out.numpy()
    arr = np.asarray(out)
    if arr.dtype == object:
        raise TypeError("predict returned %s, which is not a numeric array" % type(out).__name__)
    return arr


def _predict_extra(module, instance, item, contract):
    """Predict one extra input with model.py's module globals set as asked, then restored. The grader never makes
    this call, so a missing global or a failure skips the input (recorded) instead of failing the submission."""
    overrides = item["globals"]
    missing = sorted(k for k in overrides if not hasattr(module, k))
    if missing:
        STATUS["skipped"][item["name"]] = "model.py has no module global %s" % ", ".join(missing)
        return None
    saved = {k: getattr(module, k) for k in overrides}
    try:
        for k, v in overrides.items():
            setattr(module, k, v)
        return _predict(instance, item, contract)
    except BaseException as exc:  # noqa: BLE001 - an extra must never fail the run, SystemExit included
        STATUS["skipped"][item["name"]] = "%s: %s" % (type(exc).__name__, exc)
        return None
    finally:
        for k, v in saved.items():
            setattr(module, k, v)


_RELATIVE_EVENTS = {"open": 0, "os.listdir": 0, "os.scandir": 0, "glob.glob": 0, "shutil.copyfile": 0, "os.chdir": 0}


def _watch_relative_paths():
    """Record every path the submission opens or lists relative to the working directory (an audit hook: it sees
    Python-level opens, numpy/pickle/zip/.keras reads and directory listings, not files opened inside C libraries)."""
    ours = {os.path.abspath(STATUS_FILE), os.path.abspath(STATUS_FILE) + ".tmp"}

    def hook(event, args):
        index = _RELATIVE_EVENTS.get(event)
        if index is None or not args:
            return
        path = args[index]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path is None:
            path = "."
        if not isinstance(path, str) or os.path.isabs(path) or os.path.abspath(path) in ours:
            return
        seen = STATUS.setdefault("relative_paths", [])
        if path not in seen and len(seen) < 50:
            seen.append(path)

    sys.addaudithook(hook)


def _write_status(phase):
    STATUS["phase"] = phase
    STATUS["versions"] = _imported_versions()
    tmp = STATUS_FILE + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(STATUS, handle)
    os.replace(tmp, STATUS_FILE)


VERSION_MODULES = ("numpy", "tensorflow", "keras", "onnxruntime")


def _imported_versions():
    """Python and the versions of the libraries the submission actually imported in this runtime (not the host's)."""
    out = {"python": "%d.%d.%d" % tuple(sys.version_info[:3])}
    for name in VERSION_MODULES:
        try:
            version = getattr(sys.modules.get(name), "__version__", None)
        except Exception:  # noqa: BLE001 - a lazily loaded module may fail on attribute access
            version = None
        if isinstance(version, str):
            out[name] = version
    return out


class _Blocker(importlib.abc.MetaPathFinder):
    """The grader has no cbtool: make it unimportable even when the interpreter has it installed."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError("No module named %r (not available in the grader's runtime)" % fullname, name=fullname)
        return None


def _block(names):
    if names:
        sys.meta_path.insert(0, _Blocker(names))
        for name in list(sys.modules):
            if name.split(".")[0] in names:
                del sys.modules[name]


class _Capture:
    """Records every tensor that reaches a network's input layer (the one the manifest names, else the first layer).

    Every network the instance holds is wrapped (an ensemble holds several, in its members' order): `files` keeps the
    first network's calls per input, `nets` every network's."""

    def __init__(self, output_dir, layer=None):
        self.output_dir = output_dir
        self.layer = layer
        self.files = {}
        self.nets = {}
        self.wrapped = []
        self.current = None

    def start(self, key):
        self.current = key
        self.nets.setdefault(key, [[] for _ in self.wrapped] or [[]])
        self.files[key] = self.nets[key][0]

    def record(self, value, net=0):
        """Save one tensor; inside a traced tf.function, add a py_function that saves it at every execution."""
        try:
            if _is_symbolic(value):
                import tensorflow as tf

                tf.py_function(func=lambda v: self._save(v, net), inp=[value], Tout=[])
            else:
                self._save(value, net)
        except Exception as exc:  # noqa: BLE001 - capturing must never break the submission's own path
            STATUS.setdefault("capture_errors", []).append("%s: %s" % (type(exc).__name__, exc))

    def _save(self, value, net=0):
        import numpy as np

        if self.current is None:
            return
        arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        calls = self.nets[self.current][net]
        path = os.path.join(self.output_dir, "cap_%s_n%02d_%04d.npy" % (self.current, net, len(calls)))
        np.save(path, arr, allow_pickle=False)
        calls.append(path)

    def install(self, instance, module):
        """Find the networks held by the instance (or model.py's globals) and wrap each; say what was wrapped."""
        for obj in _candidates(instance, module):
            kind = type(obj).__name__
            if kind == "InferenceSession" and hasattr(obj, "run"):
                self.wrapped.append(self._wrap_onnx(obj, len(self.wrapped)))
            elif hasattr(obj, "layers") and callable(getattr(obj, "call", None)):
                self.wrapped.append(self._wrap_keras(obj, len(self.wrapped)))
        if not self.wrapped:
            return "none: no Keras model or onnxruntime session found on the Model instance"
        if len(self.wrapped) == 1:
            return self.wrapped[0]
        if len(set(self.wrapped)) == 1:
            return "%d networks, each at its %s" % (len(self.wrapped), self.wrapped[0])
        return "%d networks: %s" % (len(self.wrapped), "; ".join(self.wrapped))

    def _wrap_keras(self, model, net=0):
        for attr, value in (("run_eagerly", True), ("jit_compile", False)):
            try:
                setattr(model, attr, value)  # so predict() hands the wrapped call real tensors, not graph symbols
            except Exception:  # noqa: BLE001
                pass
        for attr in ("predict_function", "_predict_function"):
            if getattr(model, attr, None) is not None:
                try:
                    setattr(model, attr, None)
                except Exception:  # noqa: BLE001
                    pass
        layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
        named = [l for l in layers if self.layer and l.name == self.layer]
        target = named[0] if named else (layers[0] if layers else model)
        original = target.call

        def call(inputs, *args, **kwargs):
            self.record(inputs, net)
            return original(inputs, *args, **kwargs)

        target.call = call
        return "keras layer %r of %s" % (target.name, type(model).__name__)

    def _wrap_onnx(self, session, net=0):
        original = session.run

        def run(output_names, feed, *args, **kwargs):
            self.record(list(feed.values())[0], net)
            return original(output_names, feed, *args, **kwargs)

        session.run = run
        return "onnxruntime session input"


def _is_symbolic(value):
    """A graph tensor (inside tf.function tracing): it has no value yet."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not tf.is_tensor(value):
        return False
    try:
        value.numpy()
        return False
    except Exception:  # noqa: BLE001 - symbolic tensors raise on .numpy()
        return True


def _candidates(instance, module):
    seen, out = set(), []

    def visit(obj, depth):
        if id(obj) in seen or depth > 2 or isinstance(obj, (type, types.ModuleType)):
            return
        seen.add(id(obj))
        if type(obj).__name__ == "InferenceSession" or (hasattr(obj, "layers") and hasattr(obj, "call") and not isinstance(obj, type)):
            out.append(obj)
            return
        children = []
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple)):
            children = list(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__ in ("model", "builtins"):
            children = list(vars(obj).values())
        for child in children:
            visit(child, depth + 1)

    visit(instance, 0)
    for value in list(vars(module).values()):
        visit(value, 1)
    return out


STATUS_FILE = None

if __name__ == "__main__":
    main(sys.argv[1])
