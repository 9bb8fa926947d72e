#!/usr/bin/env python3
"""Regenerate (--write) or check (--check) the recorded command outputs in the docs, by running the commands.

A recorded block is a fenced block between two markers:

    <!-- transcript: NAME -->
    ```console
    $ cbtool inspect training_set.npz
    (the output, rewritten by --write)
    ```
    <!-- /transcript -->

Each Markdown file runs in its own scratch folder (with `examples/` linked in), its blocks in order, so a later block
sees the files an earlier one wrote. In a `console` block every `$ ` line (continued by a trailing `\\`) is run with
bash; the lines after it are its output (stdout and stderr together, as a terminal shows them), and a non-zero exit
adds a last line `[exit N]`. A `python` block is code shown to the reader and run as it is (a failure stops the
file); a later block named `NAME-output` records what the python block `NAME` printed. `cbtool` and `python` are the
interpreter's own (this script's venv).

What is written: the output with progress bars (tqdm, stderr only, gone with -q), TensorFlow's C++/absl log lines
(machine-specific CPU flags and GPU notes) and trailing blanks removed, lines over 320 characters cut there (ending
in ` [...]`), the home folder shown as `~` and the scratch folder as a relative path.
What is compared (--check), on both sides: that text with the volatile parts replaced, so a re-run matches while an
added, removed or changed line fails: durations (`38 s`, `291ms/step`) -> <t>; sizes (`0.27 MiB`, `538 MB`) -> <size>;
hex digests of 10+ digits -> <hex>; dates -> <date>; paths in the temporary folder -> <tmp>; every number on a line
about speed or memory (`images per second`, `images/s`, `time limit allows`, `peak memory`) -> <n>; runs of spaces
and of dashes (table widths) -> one. Counts, file names, accuracies and exit codes compare exactly: CPU training with
a fixed seed measured bit-identical across runs (two `cbtool train` runs: equal history.json; the notebook's Keras
fit: the same val_accuracy hours apart). --write keeps a block whose compared form is unchanged, so a re-run does
not churn the docs.

Usage: python examples/transcripts.py (--check | --write) [FILE.md ...] [--keep DIR]
Exit codes: 0 docs match, 1 a block differs (--check prints a unified diff), 2 a bad option or a python block failed.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^<!-- transcript: ([\w.-]+) -->\n```(\w*)\n(.*?)^```\n<!-- /transcript -->$", re.M | re.S)
TIMEOUT_S = 1200
OUTPUT_SUFFIX = "-output"  # a block NAME-output records what the python block NAME printed
MAX_LINE = 320  # a longer line (a raw error dumping a whole Keras config) is cut here and ends in " [...]"

# Lines dropped from what is written: they depend on the machine, or are progress that a terminal overwrites.
_NOISE = [
    re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "),  # absl/TF C++ log line
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"),
    re.compile(r"\d+%\|.*\| *\d+/\d+ \["),  # a tqdm bar
]
# (pattern, replacement) applied in order to both sides before comparing.
_VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?"), "<date>"),
    (re.compile(r"\b[0-9a-f]{10,64}\b"), "<hex>"),
    (re.compile(r"(?<![\w.])\d+(\.\d+)? ?(KiB|MiB|GiB|kB|MB|GB)\b"), "<size>"),
    (re.compile(r"(?<![\w.])\d+(\.\d+)? ?(ms|us|µs|s|min)(?=\b|/)"), "<t>"),
    (re.compile(re.escape(tempfile.gettempdir()) + r"/[^\s'\"()]+"), "<tmp>"),  # a temporary folder cbtool made
]
_RATE_LINE = re.compile(r"images per second|images/s|img/s|time limit allows|peak memory", re.I)
_NUMBER = re.compile(r"(?<![\w<])\d[\d,]*(\.\d+)?")


@dataclass
class Block:
    """One marked block of a Markdown file: its name, fence language, body and span in the file's text."""

    name: str
    lang: str
    body: str
    span: tuple[int, int]


def find_blocks(text: str) -> list[Block]:
    """The marked blocks of a Markdown text, in order."""
    return [Block(m.group(1), m.group(2), m.group(3), m.span(3)) for m in BLOCK.finditer(text)]


def parse_console(body: str) -> list[tuple[str, str]]:
    """A console block's (command, recorded output) pairs; a command continues while its line ends with `\\`."""
    steps: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            command = [lines[i][2:]]
            while command[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                command.append(lines[i])
            steps.append(("\n".join(command), []))
        elif steps:
            steps[-1][1].append(lines[i])
        i += 1
    return [(cmd, "\n".join(out)) for cmd, out in steps]


def render_console(steps: list[tuple[str, str]]) -> str:
    """A console block's body from (command, output) pairs."""
    parts = []
    for command, output in steps:
        parts.append("$ " + command)
        if output:
            parts.append(output)
    return "\n".join(parts) + "\n"


def clean_output(raw: str, scratch: Path) -> str:
    """What a terminal would keep of a command's output, without machine-specific noise (see the module doc)."""
    for folder in {str(scratch), os.path.realpath(scratch)}:
        raw = raw.replace(folder + os.sep, "").replace(folder, ".")
    home = os.path.expanduser("~")
    if home not in ("", "/"):
        raw = raw.replace(home + os.sep, "~" + os.sep)
    kept = []
    for line in raw.split("\n"):
        line = line.split("\r")[-1] if line.strip("\r") else ""  # a terminal shows the last overwrite
        if not any(p.search(line) for p in _NOISE):
            line = line.rstrip()
            kept.append(line if len(line) <= MAX_LINE else line[:MAX_LINE] + " [...]")
    return "\n".join(kept).strip("\n")


def comparable(text: str) -> list[str]:
    """`text` with its volatile parts replaced (see the module doc), one string per line."""
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        if _RATE_LINE.search(line):
            line = _NUMBER.sub("<n>", line)
        line = re.sub(r"-{2,}", "--", re.sub(r"[ \t]+", " ", line)).strip()
        lines.append(line)
    return lines


def command_env() -> dict[str, str]:
    """The commands' environment: this interpreter's bin first, unbuffered output so stdout and stderr interleave."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PYTHONUNBUFFERED="1", PYTHONHASHSEED="0", COLUMNS="120", NO_COLOR="1")
    return env


def run_command(command: str, scratch: Path) -> str:
    """Run one command line in the scratch folder; its cleaned output, plus `[exit N]` when it failed."""
    try:
        proc = subprocess.run(["bash", "-c", command], cwd=scratch, env=command_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"[killed after {TIMEOUT_S} s]"  # recorded like any output: --check shows it in the diff
    output = clean_output(proc.stdout.decode("utf-8", "replace"), scratch)
    if proc.returncode:
        output = (output + "\n" if output else "") + f"[exit {proc.returncode}]"
    return output


def run_python(block: Block, scratch: Path, doc: Path) -> str:
    """Run a python block as shown, in the scratch folder; its cleaned output. A failure stops the file (exit 2)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(block.body)
    try:
        proc = subprocess.run([sys.executable, handle.name], cwd=scratch, env=command_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
    finally:
        os.unlink(handle.name)
    output = clean_output(proc.stdout.decode("utf-8", "replace"), scratch)
    if proc.returncode:
        raise BlockFailed(f"{doc}: python block {block.name!r} exited {proc.returncode}:\n{output[-2000:]}")
    return output


class BlockFailed(Exception):
    """A python block (set-up code shown in the docs) failed, or two blocks share a name: the file cannot be run."""


def run_doc(doc: Path, scratch: Path, log) -> list[tuple[Block, str]]:
    """Run every block of one Markdown file in order; each console block with its freshly recorded body."""
    scratch.mkdir(parents=True, exist_ok=True)
    if not (scratch / "examples").exists():
        (scratch / "examples").symlink_to(ROOT / "examples")
    fresh, printed = [], {}
    blocks = find_blocks(doc.read_text())
    names = [block.name for block in blocks]
    if len(set(names)) < len(names):
        raise BlockFailed(f"{doc}: two blocks share a name: {sorted({n for n in names if names.count(n) > 1})}")
    for block in blocks:
        started = time.monotonic()
        if block.lang == "python":
            printed[block.name] = run_python(block, scratch, doc)
        elif block.name.endswith(OUTPUT_SUFFIX):
            source = block.name[:-len(OUTPUT_SUFFIX)]
            fresh.append((block, printed.get(source, f"[no python block {source!r} before this one]") + "\n"))
        else:
            steps = [(cmd, run_command(cmd, scratch)) for cmd, _ in parse_console(block.body)]
            fresh.append((block, render_console(steps)))
        log(f"{doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc}: {block.name} "
            f"({time.monotonic() - started:.1f} s)")
    return fresh


def block_diff(doc: Path, block: Block, new_body: str) -> str:
    """A unified diff of the compared forms of a block's recorded and fresh bodies ('' when they match)."""
    old, new = comparable(block.body), comparable(new_body)
    if old == new:
        return ""
    label = f"{doc}#{block.name}"
    return "\n".join(difflib.unified_diff(old, new, f"{label} (recorded)", f"{label} (program now)", lineterm=""))


def write_doc(doc: Path, fresh: list[tuple[Block, str]]) -> int:
    """Rewrite the blocks whose compared form changed, found again by name (the prose may have been edited
    meanwhile); how many were rewritten."""
    text, changed = doc.read_text(), 0
    bodies = {block.name: body for block, body in fresh if comparable(block.body) != comparable(body)}
    for block in reversed(find_blocks(text)):
        if block.name in bodies:
            text = text[:block.span[0]] + bodies.pop(block.name) + text[block.span[1]:]
            changed += 1
    if changed:
        doc.write_text(text)
    return changed


def default_docs() -> list[Path]:
    """README.md and every examples/**/README.md that holds a marked block."""
    candidates = [ROOT / "README.md", *sorted((ROOT / "examples").glob("**/README.md"))]
    return [doc for doc in candidates if BLOCK.search(doc.read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="run the commands; exit 1 with a diff when a block differs")
    mode.add_argument("--write", action="store_true", help="run the commands and rewrite the blocks that changed")
    parser.add_argument("docs", nargs="*", type=Path, help="Markdown files (default: README.md, examples/**/README.md)")
    parser.add_argument("--keep", type=Path, help="run in DIR/<n>-<file> and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    docs = [doc.resolve() for doc in args.docs] or default_docs()
    missing = [str(doc) for doc in docs if not doc.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    diffs = []
    for n, doc in enumerate(docs):
        base = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="transcripts-"))
        scratch = base / f"{n}-{doc.parent.name or 'root'}" if args.keep else base
        try:
            fresh = run_doc(doc, scratch, log)
        except BlockFailed as failure:
            log(str(failure))
            return 2
        finally:
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
        if args.write:
            log(f"{doc}: rewrote {write_doc(doc, fresh)} of {len(fresh)} block(s)")
        diffs += [d for d in (block_diff(doc, block, body) for block, body in fresh) if d]
    if args.check and diffs:
        print("\n".join(diffs))
        print(f"{len(diffs)} recorded block(s) differ from the program: python examples/transcripts.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
