"""toolkit.data.io: every schema loads into one form, and every kind of bad input gets a one-line DataError."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from toolkit.data.io import BLOOD_CELL_CLASSES, load_dataset, save_dataset
from toolkit.errors import DataError

RNG = np.random.default_rng(1)


def _imgs(n=6, c=3, dtype=np.uint8):
    return RNG.integers(0, 256, (n, 8, 8, c)).astype(dtype)


def test_2024_schema_normalised(tiny_npz):
    ds = load_dataset(tiny_npz)
    assert ds.schema == "an2dl2024" and ds.images.dtype == np.uint8 and ds.images.shape == (12, 96, 96, 3)
    assert ds.labels.shape == (12,) and ds.labels.dtype == np.int64
    assert ds.class_names == BLOOD_CELL_CLASSES
    assert ds.original_indices.tolist() == list(range(12))


def test_2023_schema_needs_allow_pickle(tmp_path):
    path = tmp_path / "public_data.npz"
    labels = np.array(["healthy", "unhealthy", "healthy", "healthy", "unhealthy", "healthy"], dtype=object)
    np.savez(path, data=_imgs().astype(np.float32), labels=labels)
    with pytest.raises(DataError, match=r"public_data.npz.*--allow-pickle"):
        load_dataset(path)
    ds = load_dataset(path, allow_pickle=True)
    assert ds.schema == "an2dl2023" and ds.class_names == ["healthy", "unhealthy"]
    assert ds.labels.tolist() == [0, 1, 0, 0, 1, 0] and ds.images.dtype == np.uint8


def test_generic_schema_and_round_trip_keeps_indices(tmp_path):
    src = tmp_path / "g.npz"
    np.savez(src, x=_imgs(), y=np.array([0, 1, 2, 0, 1, 2]))
    ds = load_dataset(src)
    sub = ds.subset(np.array([5, 1]))
    out = save_dataset(sub, tmp_path / "sub.npz")
    again = load_dataset(out)
    assert again.original_indices.tolist() == [5, 1]
    assert np.array_equal(again.images, ds.images[[5, 1]]) and again.labels.tolist() == [2, 1]
    assert not list(tmp_path.glob(".*tmp*"))


def test_2023_round_trip_writes_strings_without_pickle(tmp_path):
    src = tmp_path / "p.npz"
    np.savez(src, data=_imgs().astype(np.float32), labels=np.array(["a", "b", "a", "b", "a", "b"]))
    ds = load_dataset(src)
    out = save_dataset(ds, tmp_path / "o.npz")
    raw = np.load(out)  # allow_pickle=False: nothing written needs unpickling
    assert raw["data"].dtype == np.float32 and raw["labels"].tolist() == ["a", "b", "a", "b", "a", "b"]


def test_save_refuses_to_overwrite_input(tiny_npz):
    ds = load_dataset(tiny_npz)
    before = tiny_npz.read_bytes()
    with pytest.raises(DataError, match="refusing to overwrite the input"):
        save_dataset(ds, tiny_npz)
    assert tiny_npz.read_bytes() == before


def _write(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


BAD_CASES = {
    "missing_keys": (dict(pics=_imgs(), labels=np.zeros(6)), r"found keys 'labels', 'pics'"),
    "not_4d": (dict(images=np.zeros((6, 8, 8, 3, 1), np.uint8), labels=np.zeros(6, int)), r"expected \(N,H,W,3\)"),
    "grayscale_3d": (dict(images=np.zeros((6, 8, 8), np.uint8), labels=np.zeros(6, int)), "1 channel"),
    "one_channel": (dict(images=_imgs(c=1), labels=np.zeros(6, int)), r"found 1 channel \(grayscale\)"),
    "four_channels": (dict(images=_imgs(c=4), labels=np.zeros(6, int)), "found 4 channels"),
    "length_mismatch": (dict(images=_imgs(), labels=np.zeros(5, int)), "6 images but 5 labels"),
    "nan": (dict(images=np.full((6, 8, 8, 3), np.nan, np.float32), labels=np.zeros(6, int)), "contains NaN"),
    "inf": (dict(images=np.full((6, 8, 8, 3), np.inf, np.float32), labels=np.zeros(6, int)), "contains inf"),
    "float_range": (dict(images=np.full((6, 8, 8, 3), 300.0, np.float32), labels=np.zeros(6, int)), r"found range \[300, 300\]"),
    "non_integral": (dict(images=np.full((6, 8, 8, 3), 12.5, np.float32), labels=np.zeros(6, int)), "non-integral"),
    "negative_label": (dict(images=_imgs(), labels=np.array([0, 1, -1, 0, 1, 0])), "negative class index -1"),
    "label_out_of_range": (
        dict(images=_imgs(), labels=np.array([0, 1, 9, 0, 1, 0]), class_names=np.array(["a", "b", "c"])),
        r"class index 9, expected indices 0-2",
    ),
    "one_hot": (dict(images=_imgs(), labels=np.eye(6, 3)), "one-hot"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_one_line_error(tmp_path, case):
    arrays, pattern = BAD_CASES[case]
    path = _write(tmp_path, **arrays)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.npz")


def test_not_a_zip(tmp_path):
    path = tmp_path / "x.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a zip archive"):
        load_dataset(path)
    np.save(tmp_path / "y.npy", np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        load_dataset(tmp_path / "y.npy")


def test_truncated(tmp_path, tiny_npz):
    data = tiny_npz.read_bytes()
    path = tmp_path / "trunc.npz"
    path.write_bytes(data[: len(data) // 2] + data[-200:])  # keeps the central directory, loses member bytes
    with pytest.raises(DataError, match="truncated"):
        load_dataset(path)


def test_out_of_range_with_num_classes(tmp_path):
    path = _write(tmp_path, images=_imgs(), labels=np.array([0, 1, 2, 0, 1, 8]))
    with pytest.raises(DataError, match="expected indices 0-7"):
        load_dataset(path, num_classes=8)


def test_zip_without_arrays(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(DataError, match="found keys"):
        load_dataset(path)


def test_atomic_writes_get_ordinary_permissions_and_leave_nothing_on_failure(tmp_path, tiny_npz):
    import os

    from toolkit.fsutil import atomic_open

    umask = os.umask(0o027)
    try:
        save_dataset(load_dataset(tiny_npz), tmp_path / "out.npz")
        with atomic_open(tmp_path / "a.txt") as handle:
            handle.write("x")
        with pytest.raises(RuntimeError), atomic_open(tmp_path / "b.txt") as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.npz").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != tiny_npz.name) == ["a.txt", "out.npz"]
