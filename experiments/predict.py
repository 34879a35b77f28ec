"""Predict with a trained run: `python experiments/predict.py --workdir=RUN --input=PATH`.

Flags:
  --workdir     a training workdir (run.json, normalization.npz, checkpoints/); nothing else is
                read: no config file, no dataset.
  --input       an audio file (any rate and channel count), a feature file of the run's target
                modality (.arff, CSV with a time column, OpenFace 2.x CSV) or a folder of them.
  --output      the CSV (file input; default `<input stem>.predictions.csv` in the current
                directory) or the folder of CSVs (folder input; default `<folder>.predictions/`).
  --plot        also write a PNG beside each CSV.
  --checkpoint  best (default) or latest.
  --stream      feed --input through a causal run as a live stream, hop by hop, printing one CSV
                row per 40 ms as soon as it is predicted: a wav (fed at real-time pace unless
                --norealtime) or `-`, raw 16-bit little-endian mono PCM at the run's sample rate
                on standard input, e.g.
                `arecord -f S16_LE -r 16000 -c 1 | python experiments/predict.py --workdir=RUN
                --stream --input=-`. With --output the rows also go to that CSV.

Frame-level runs write `time,<label names>`: one row per 40 ms label frame, on the label time
line (the label delay undone, as --mode=eval does). Utterance-level runs write one row:
`name,category,p_<class>...` (category task) or `name,<label names>`. See docs/predict.md.

Exit status: 0 when every input (folder: at least one) was predicted; 1 otherwise. A bad file in
a folder is reported on stderr with its path and reason and the rest go on.
"""
import csv
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir of the run to use.")
_INPUT = flags.DEFINE_string("input", None, "Audio file, feature file or a folder of them.")
_OUTPUT = flags.DEFINE_string("output", None, "Output CSV (file input) or folder (folder input).")
_PLOT = flags.DEFINE_bool("plot", False, "Also write a PNG beside each CSV.")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Checkpoint to use.")
_STREAM = flags.DEFINE_bool("stream", False, "Stream --input (a wav, or - for 16-bit PCM on "
                            "stdin) through a causal run, one row per 40 ms.")
_REALTIME = flags.DEFINE_bool("realtime", True, "--stream with a wav: feed it at real-time pace.")
flags.mark_flags_as_required(["workdir", "input"])


def write_csv(path: str, prediction, track, recognizer, name: str) -> None:
    """Writes one input's predictions (format in the module docstring), atomically."""
    from emobed_jax import atomic

    with atomic.atomic_write(path, newline="") as f:
        w = csv.writer(f)
        if recognizer.task == "category":
            classes = list(recognizer.class_names)
            w.writerow(["name", "category"] + [f"p_{c}" for c in classes])
            w.writerow([name, classes[int(prediction.probabilities.argmax())]]
                       + [f"{p:.6f}" for p in prediction.probabilities])
        elif recognizer.level == "frame":
            w.writerow(["time"] + list(recognizer.label_names))
            for t, row in zip(track.times, prediction.outputs):
                w.writerow([f"{t:.3f}"] + [f"{v:.6f}" for v in row])
        else:
            w.writerow(["name"] + list(recognizer.label_names))
            w.writerow([name] + [f"{v:.6f}" for v in prediction.outputs])


def write_plot(path: str, prediction, track, recognizer, name: str) -> str:
    """A PNG of the predictions: traces over time (frame level) or a bar chart (utterance)."""
    from matplotlib.figure import Figure

    from emobed_jax.evaluation import plots

    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.subplots()
    if recognizer.level == "frame" and recognizer.task != "category":
        for k, label in enumerate(recognizer.label_names):
            ax.plot(track.times, prediction.outputs[:, k], lw=1.0, label=label)
        ax.set_xlabel("time (s, label time line)")
        ax.legend(loc="upper right", fontsize=8)
    else:
        probs = prediction.probabilities
        labels = recognizer.class_names if probs is not None else recognizer.label_names
        ax.bar(list(labels), probs if probs is not None else prediction.outputs)
    ax.set_title(f"{name} · step {recognizer.step}", fontsize=9)
    ax.grid(alpha=0.3)
    # plots.plot_predictions needs gold traces; new media have none, so only its writer is shared.
    return plots._save_png(fig, path)


def predict_one(recognizer, path: str, out_csv: str, plot: bool) -> list:
    """Predicts one input file; returns the paths written."""
    from emobed_jax.inference import media

    track = media.read_input(path, recognizer)
    prediction = recognizer.predict_features(track.features, track.valid)
    name = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(os.path.dirname(os.path.abspath(out_csv)), exist_ok=True)
    write_csv(out_csv, prediction, track, recognizer, name)
    written = [out_csv]
    if plot:
        written.append(write_plot(os.path.splitext(out_csv)[0] + ".png", prediction, track,
                                  recognizer, name))
    return written


def predict_folder(recognizer, folder: str, out_dir: str, plot: bool) -> int:
    """Predicts every supported file of `folder` (not recursive); returns the exit status."""
    from tqdm import tqdm

    from emobed_jax.inference import media

    names = sorted(os.listdir(folder))
    files = [n for n in names if os.path.isfile(os.path.join(folder, n)) and media.is_supported(n)]
    skipped = len(names) - len(files)
    failed = 0
    for n in tqdm(files, desc="predict", unit="file", file=sys.stderr):
        path = os.path.join(folder, n)
        out = os.path.join(out_dir, os.path.splitext(n)[0] + ".predictions.csv")
        try:
            predict_one(recognizer, path, out, plot)
        except (ValueError, OSError) as e:
            failed += 1
            tqdm.write(f"error: {path}: {_reason(e, path)}", file=sys.stderr)
    done = len(files) - failed
    print(f"predicted {done} of {len(files)} files in {folder}; {failed} failed; {skipped} "
          f"skipped (not a supported file); CSVs{' and PNGs' if plot else ''} in {out_dir}",
          flush=True)
    return 0 if done else 1


def _pcm_chunks(source: str, sample_rate: int, hop: int, realtime: bool):
    """Float32 mono chunks of `hop` samples: from a wav (resampled; at real-time pace when
    `realtime`) or, for `-`, raw 16-bit little-endian PCM read from standard input."""
    import time

    import numpy as np

    from emobed_jax.features import audio
    from emobed_jax.inference import media

    if source != "-":
        wav = audio.load_audio(source, sample_rate)
        start = time.monotonic()
        for begin in range(0, len(wav), hop):
            yield wav[begin:begin + hop]
            if realtime:  # the next hop has not been "recorded" yet
                time.sleep(max(0.0, start + (begin + hop) / sample_rate - time.monotonic()))
        return
    pending = b""
    while True:
        data = sys.stdin.buffer.read(2 * hop)
        if not data:
            break
        data = pending + data
        whole = len(data) - len(data) % 2
        pending = data[whole:]
        yield np.frombuffer(data[:whole], "<i2").astype(np.float32) / 32768.0
    if pending:
        raise media.MediaError(
            f"standard input ended mid-sample ({len(pending)} byte after the last whole sample; "
            f"expected 16-bit little-endian PCM, 2 bytes per sample): the rows up to the last "
            f"whole sample were printed")


def run_stream(rec, source: str, out_csv: str | None) -> int:
    """Streams `source` through `rec` (a causal run), one CSV row per emitted label frame on
    standard output (and into `out_csv`); see docs/streaming.md for the label time of a row."""
    import contextlib

    from emobed_jax import atomic
    from emobed_jax.inference import streaming

    stream = streaming.Stream(rec)
    hop = int(round(stream.sample_rate / stream.frame_rate_hz))
    header = ["time"] + list(stream.label_names)
    with contextlib.ExitStack() as stack:
        writers = [csv.writer(sys.stdout)]
        if out_csv:
            os.makedirs(os.path.dirname(os.path.abspath(out_csv)), exist_ok=True)
            writers.append(csv.writer(stack.enter_context(atomic.atomic_write(out_csv,
                                                                              newline=""))))
        for w in writers:
            w.writerow(header)

        def emit(items):
            for time_s, outputs in items:
                row = [f"{time_s:.3f}"] + [f"{v:.6f}" for v in outputs]
                for w in writers:
                    w.writerow(row)
            sys.stdout.flush()

        try:
            for pcm in _pcm_chunks(source, stream.sample_rate, hop, _REALTIME.value):
                emit(stream.push(pcm))
        finally:
            emit(stream.flush())  # a stream cut short still gets its last complete frames
    if out_csv:
        print(f"wrote {out_csv}", file=sys.stderr, flush=True)
    return 0


def _reason(error: Exception, path: str) -> str:
    """The error message without a repeated leading path."""
    message = str(error)
    return message[len(path) + 2:] if message.startswith(path + ": ") else message


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        sys.exit(_run())
    except (ValueError, OSError) as e:
        # Bad input: the message names the file and what was expected; EMOBED_TRACEBACK=1 shows
        # the traceback anyway.
        if os.environ.get("EMOBED_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)


def _run() -> int:
    from emobed_jax import console

    console.setup()  # our lines only: no library INFO, no note about a missing TPU backend
    from emobed_jax.inference import media, recognizer

    source = _INPUT.value.rstrip(os.sep) or _INPUT.value
    if not (_STREAM.value and source == "-") and not os.path.exists(source):
        raise media.MediaError(f"{source}: no such file or folder")
    rec = recognizer.Recognizer.from_workdir(_WORKDIR.value, checkpoint=_CHECKPOINT.value)
    print(f"{_WORKDIR.value}: step {rec.step} ({_CHECKPOINT.value}), target {rec.target!r}, "
          f"{rec.level} level, task {rec.task}", flush=True,
          file=sys.stderr if _STREAM.value else sys.stdout)
    if _STREAM.value:
        return run_stream(rec, source, _OUTPUT.value)
    stem = os.path.splitext(os.path.basename(source))[0]
    if os.path.isdir(source):
        return predict_folder(rec, source, _OUTPUT.value or f"{stem}.predictions", _PLOT.value)
    for path in predict_one(rec, source, _OUTPUT.value or f"{stem}.predictions.csv", _PLOT.value):
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    from emobed_jax import tcmalloc

    tcmalloc.reexec()  # where installed: 1.4-1.8x faster JAX on the CPU
    app.run(main)
