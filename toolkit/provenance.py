"""What produced an artefact: versions and hashes recorded beside every output."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from toolkit.fsutil import sha256_text

PREPROCESSING_FILE = Path(__file__).with_name("preprocessing.py")


def preprocessing_source() -> str:
    """The exact source of `toolkit/preprocessing.py`, as copied into submissions."""
    return PREPROCESSING_FILE.read_text(encoding="utf-8")


def preprocessing_sha256(source: str | None = None) -> str:
    """sha256 of the preprocessing source (the given text, or the installed file)."""
    text = preprocessing_source() if source is None else source
    return sha256_text(text)


def versions(with_tensorflow: bool = False) -> dict:
    """Python and library versions; TensorFlow/Keras only when asked (importing them is slow)."""
    import numpy

    from toolkit import __version__

    info = {"cbtool": __version__, "python": platform.python_version(), "numpy": numpy.__version__, "platform": sys.platform}
    if with_tensorflow:
        import keras
        import tensorflow as tf

        info.update(tensorflow=tf.__version__, keras=keras.__version__)
    return info
