"""TensorFlow's C++ (absl) log lines kept off the user's terminal unless --debug.

TF >= 2.17 logs through absl before absl is initialised, so TF_CPP_MIN_LOG_LEVEL no longer hides the oneDNN and
CPU-feature lines printed while `import tensorflow` loads its shared libraries (measured: TF 2.21 prints them even
with level 3). They go straight to file descriptor 2, below Python. So the first `import tensorflow` runs with fd 2
captured, and every captured line except TF's own I/W/E log lines is written back. The variable is still set for
what TF logs later and for the child processes cbtool starts; the grader sandbox builds its own environment.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile

# absl's "I0000 00:00:1795985716.06 12443 port.cc:153] ...", the older "2024-01-01 12:00:00.123: W tensorflow/...",
# absl's pre-init banner, and the continuation line of cpu_feature_guard's message. F (fatal) lines stay.
_NOISE = re.compile(r"(WARNING: All log messages before absl::InitializeLog\(\) is called"
                    r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
                    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "
                    r"|To enable the following instructions: .*rebuild TensorFlow)")
_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # 2 = warnings and info hidden, errors shown
_PY_LOGGERS = ("absl", "tensorflow")  # Python-side "WARNING:absl:..." lines from TF and Keras
_set_by_us: dict[str, str] = {}


def quiet_native_logs(quiet: bool) -> None:
    """Hide (quiet=True) or show TensorFlow's C++ and absl log lines; call before TensorFlow is imported."""
    if quiet:
        for key, value in _ENV.items():
            if key not in os.environ:  # a user's own setting wins
                os.environ[key] = _set_by_us[key] = value
        if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _QuietTensorFlowImport())
    else:
        for key, value in list(_set_by_us.items()):
            if os.environ.get(key) == value:
                del os.environ[key]
            del _set_by_us[key]
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]
    for name in _PY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)


@contextlib.contextmanager
def filtered_fd2():
    """Capture file descriptor 2 (C++ writes included) and write back every line that is not a TF log line."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _NOISE.match(line))
            if kept:
                os.write(2, kept.encode("utf-8"))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the path finder would, and runs its top-level import inside `filtered_fd2`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    """Delegates to the real loader; afterwards the module names the real loader, as if nothing had wrapped it."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with filtered_fd2():
                self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
