"""`SubmissionZip`: the one reader of a submission zip, used by check, validate-preprocessing, simulate and the sandbox.

It opens the zip once, lists its entries, reports layout problems as `Issue`s (junk entries, unsafe paths,
symlinks, a wrapping folder, no model.py), serves model.py's text and manifest.json, and extracts safely: unsafe
entries refused (zip-slip), and the declared unpacked size capped against the profile's limit and the free disk
before anything is written (a zip bomb of 4 GiB of zeros is 4.5 MB). zipfile itself stops every entry at its
declared size, so the declared total bounds what extraction can write.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

from toolkit.artifacts import SUBMISSION_FILES
from toolkit.errors import SubmissionError
from toolkit.results import Issue

JUNK = ("__MACOSX/", ".DS_Store", "Thumbs.db", "__pycache__/")
DISK_MARGIN_BYTES = 256 * 2**20  # leave this much free after extracting
MIB = 2**20
TEXT_ENTRY_BYTES = 16 * MIB  # model.py, manifest.json: anything larger is not a real one


class SubmissionZip:
    """An opened submission zip. Use as a context manager, or call `close()`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise SubmissionError(f"{self.path}: no such submission zip")
        try:
            self._zf = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise SubmissionError(f"{self.path}: not a readable zip file ({exc})") from exc
        self.infos = self._zf.infolist()
        self.names = [i.filename for i in self.infos]
        self._manifest: dict | None = None

    def __enter__(self) -> SubmissionZip:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()

    # --- sizes and contents ---------------------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def unpacked_bytes(self) -> int:
        """The uncompressed size the entries declare (what extraction writes)."""
        return sum(i.file_size for i in self.infos)

    def has(self, name: str) -> bool:
        return name in self.names

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """An entry's bytes; one declaring more than `max_bytes` (default: a text entry's cap) is refused unread."""
        limit = TEXT_ENTRY_BYTES if max_bytes is None else int(max_bytes)
        info = next((i for i in self.infos if i.filename == name), None)
        if info is not None and info.file_size > limit:
            raise SubmissionError(f"{self.path}: entry {name!r} declares {info.file_size / MIB:.1f} MiB, over the "
                                  f"{limit / MIB:g} MiB cbtool reads into memory for it (a zip bomb?); not read")
        try:
            return self._zf.read(name)
        except (KeyError, OSError, zipfile.BadZipFile, RuntimeError) as exc:
            raise SubmissionError(f"{self.path}: cannot read entry {name!r} ({exc})") from exc

    @property
    def model_py(self) -> str | None:
        """model.py's text at the zip root (None when there is none)."""
        if not self.has(SUBMISSION_FILES.MODEL_PY):
            return None
        return self.read(SUBMISSION_FILES.MODEL_PY).decode("utf-8", "replace")

    @property
    def manifest(self) -> dict:
        """The manifest.json cbtool's build-submission writes ({} for zips cbtool did not build, or an unreadable one)."""
        if self._manifest is None:
            self._manifest = {}
            if self.has(SUBMISSION_FILES.MANIFEST):
                try:
                    data = json.loads(self.read(SUBMISSION_FILES.MANIFEST))
                    self._manifest = data if isinstance(data, dict) else {}
                except ValueError:
                    pass
        return self._manifest

    def top_level(self) -> set[str]:
        """First path components of the entries (files and folders at the submission root)."""
        return {n.split("/")[0] for n in self.names if n}

    # --- layout -------------------------------------------------------------------------------------------------

    def layout_issues(self) -> list[Issue]:
        """Junk entries, unsafe paths, symlinks, and a model.py that is missing or inside a wrapping folder."""
        issues = []
        for info in self.infos:
            name = info.filename
            if any(part in name for part in JUNK):
                issues.append(Issue("junk_entry", name, "", "no OS metadata entries (__MACOSX, .DS_Store)", f"entry {name!r}"))
            if _unsafe(name):
                issues.append(Issue("unsafe_path", name, "", "relative entry names inside the submission", f"entry {name!r}"))
            if _is_symlink(info):
                issues.append(Issue("symlink", name, "", "regular files", "a symbolic link"))
        if not self.has(SUBMISSION_FILES.MODEL_PY):
            nested = sorted(n for n in self.names if n.endswith("/model.py") and "__MACOSX" not in n)
            if nested:
                issues.append(Issue("wrapping_folder", nested[0], "", "model.py at the zip root (the grader extracts flat; "
                                    "zip the folder's contents, not the folder)", f"model.py inside folder {nested[0].rsplit('/', 1)[0]!r}"))
            else:
                issues.append(Issue("missing_model_py", "model.py", "", "model.py at the zip root", f"entries {self.names[:8]}"))
        return issues

    def size_issues(self, size_limit_mb: float, unpacked_limit_mb: float, profile_name: str) -> list[Issue]:
        """The zip over the upload size the profile assumes; the unpacked size over the profile's extraction cap."""
        issues = []
        size_mb = self.size_bytes / MIB
        if size_mb > float(size_limit_mb):
            biggest = max(self.infos, key=lambda i: i.file_size, default=None)
            detail = f"; largest entry {biggest.filename} {biggest.file_size / MIB:.1f} MiB" if biggest else ""
            issues.append(Issue("too_large", self.path.name, "", f"at most {float(size_limit_mb):g} MiB (the upload limit profile "
                                f"{profile_name} assumes; try --fp16, --int8 or a smaller variant)", f"{size_mb:.2f} MiB{detail}"))
        unpacked_mb = self.unpacked_bytes / MIB
        if unpacked_mb > float(unpacked_limit_mb):
            issues.append(Issue("too_large_unpacked", self.path.name, "", f"at most {float(unpacked_limit_mb):g} MiB once "
                                f"extracted (profile {profile_name}'s unpacked_limit_mb)",
                                f"entries declaring {unpacked_mb:.1f} MiB (a {size_mb:.2f} MiB zip; a zip bomb?)"))
        return issues

    # --- extraction ---------------------------------------------------------------------------------------------

    def extract(self, dest: str | os.PathLike, unpacked_limit_mb: float) -> list[str]:
        """Extract every entry under `dest`; refuse unsafe entries, and sizes over the limit or the free disk."""
        dest = Path(dest).resolve()
        dest.mkdir(parents=True, exist_ok=True)
        for info in self.infos:
            self._check_entry(info, dest)
        self._check_room(dest, unpacked_limit_mb)
        for info in self.infos:
            try:
                self._zf.extract(info, dest)
            except (OSError, zipfile.BadZipFile, RuntimeError) as exc:
                raise SubmissionError(f"{self.path}: cannot extract {info.filename!r} ({exc})") from exc
        return list(self.names)

    def _check_entry(self, info: zipfile.ZipInfo, dest: Path) -> None:
        name = info.filename
        if _unsafe(name):
            raise SubmissionError(f"{self.path}: entry {name!r} points outside the submission folder (absolute path or '..'); refused")
        if _is_symlink(info):
            raise SubmissionError(f"{self.path}: entry {name!r} is a symbolic link; refused")
        target = (dest / name).resolve()
        if target != dest and dest not in target.parents:
            raise SubmissionError(f"{self.path}: entry {name!r} resolves outside the submission folder; refused")

    def _check_room(self, dest: Path, unpacked_limit_mb: float) -> None:
        need = self.unpacked_bytes
        if need > float(unpacked_limit_mb) * MIB:
            raise SubmissionError(f"{self.path}: entries declare {need / MIB:.1f} MiB unpacked, over the {float(unpacked_limit_mb):g} MiB "
                                  "this profile allows (unpacked_limit_mb; a zip bomb?); not extracted")
        free = shutil.disk_usage(dest).free
        if need + DISK_MARGIN_BYTES > free:
            raise SubmissionError(f"{self.path}: entries declare {need / MIB:.1f} MiB unpacked, but {dest} has only "
                                  f"{free / MIB:.0f} MiB free; not extracted")


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)
