"""`cbtool export`: a training run dir -> an export dir (portable weights, .keras, ONNX), each format parity-checked."""

from __future__ import annotations

import click

from toolkit.artifacts import FORMATS, ExportDir
from toolkit.cli import main
from toolkit.cli._common import Output, Result, cbtool_command


@cbtool_command(main, "export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "export_dir", required=True, type=click.Path(file_okay=False), help="Export directory to write (a previous export there is replaced).")
@click.option("--format", "formats", default="portable", show_default=True, help=f"Comma list of {', '.join(FORMATS)}.")
@click.option("--fp16", is_flag=True, help="Store the portable weight files as float16 (about half the size); agreement is recorded.")
@click.option("--int8", is_flag=True, help="Store weights.npz kernels as per-channel int8 (about a quarter of the size) "
              "and quantize model.onnx (onnxruntime.quantization); argmax agreement with float32 is recorded, and "
              "the export fails below the floor.")
@click.option("--partial", is_flag=True, help="Export an unfinished (interrupted) run's best weights so far; the "
              "manifest records how far it got.")
def export_command(out: Output, run_dir, export_dir, formats, fp16, int8, partial) -> Result:
    """Export a finished training run: portable weights (default), a .keras model and/or ONNX, checked on the probe."""
    from toolkit.export import export_run, parse_formats

    if fp16 and int8:
        raise click.UsageError("--fp16 and --int8 are exclusive: choose one weight storage")
    result = export_run(run_dir, export_dir, parse_formats(formats), fp16=fp16, log=out.info, partial=partial, int8=int8)
    lines = [f"exported {', '.join(result.formats)} to {export_dir}" + (" (float16 weights)" if fp16 else "")
             + (" (int8 kernels)" if int8 else "")]
    for name, info in result.parity.items():
        for label, numbers in ([(name, info)] if "max_abs_diff" in info else
                               [(f"{name} {k}", v) for k, v in info.items() if isinstance(v, dict)]):
            lines.append(f"  {label:<22} argmax {numbers['argmax_agreement']:.3f}  max abs diff {numbers['max_abs_diff']:.2e}"
                         f"  (n={numbers['n']})")
    lines.extend(_int8_lines(result.parity))
    total = sum(f["bytes"] for f in result.files.values())
    lines.append(f"  {len(result.files)} files, {total / 2**20:.1f} MiB; {ExportDir(export_dir).manifest.name} holds "
                 "hashes and versions")
    lines.extend(f"  note: {note}" for note in result.notes)
    return Result(data=result.to_dict(), human="\n".join(lines))



def _int8_lines(parity: dict) -> list[str]:
    """One line per int8 entry of the parity block: the weight bytes before and after, and the agreement floor."""
    entries = [(name, info) for name, info in parity.items() if "bytes_int8" in info]
    entries += [(f"{name} {k}", v) for name, info in parity.items() for k, v in info.items()
                if isinstance(v, dict) and "bytes_int8" in v]
    return [f"  {label:<22} int8 {q['bytes_int8'] / 2**20:.2f} MiB vs float32 {q['bytes_float32'] / 2**20:.2f} MiB "
            f"(agreement floor {q['min_agreement']})" for label, q in entries]
