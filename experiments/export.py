"""Exports a trained run as portable `jax.export` artifacts plus a JSON sidecar.

    python experiments/export.py --workdir=RUN --output=DIR [--platforms=cpu,cuda,tpu]

Writes DIR/predict_features.jaxexport (always), DIR/predict_waveform.jaxexport (runs whose
target features are log-mel) and DIR/export.json; see docs/export.md. Errors (no run, no
checkpoint, nothing lowers) print one line to stderr and exit 1, without a traceback.
"""
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (run.json, checkpoints/).")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write the artifacts to.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"],
                               "Platforms to lower for (those that fail are recorded and skipped).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Checkpoint to export.")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
    """Runs the export and prints where it went and for which platforms."""
    del argv
    from emobed_jax import console

    console.setup()  # our lines only: no library INFO, no note about a missing TPU backend
    from emobed_jax.inference import export

    try:
        sidecar = export.export_run(_WORKDIR.value, _OUTPUT.value, _PLATFORMS.value,
                                    checkpoint=_CHECKPOINT.value)
    except (ValueError, OSError) as e:  # ExportError, RecognizerError, unreadable files
        print(f"export failed: {e}", file=sys.stderr)
        sys.exit(1)
    for name, info in sidecar["functions"].items():
        print(f"{os.path.join(_OUTPUT.value, info['file'])}: {name} for {info['platforms']}")
    for what, why in sidecar["lowering_failures"].items():
        print(f"not lowered: {what}: {why}")
    print(f"step {sidecar['step']} of {_WORKDIR.value}; waveform input: "
          f"{sidecar['waveform_input']}")


if __name__ == "__main__":
    from emobed_jax import tcmalloc

    tcmalloc.reexec()  # where installed: 1.4-1.8x faster JAX on the CPU
    app.run(main)
