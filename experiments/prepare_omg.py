"""Extracts 16 kHz mono wavs from downloaded OMG-Emotion clips, for the ``omg_emotion`` builder.

Input is the organisers' download layout ``<videos_dir>/<video>/<utterance>.mp4``; output is
``<out_dir>/audio/<video>/<utterance stem>.wav`` (the builder's ``manual_dir`` layout). The
conversion runs the ``ffmpeg`` program. Re-running is cheap and safe: existing wavs are skipped,
each wav is written to ``<stem>.wav.part`` and renamed only once ffmpeg succeeded and the result
reads back as audio, and a clip that fails is reported without stopping the others.

Usage::

    python experiments/prepare_omg.py --videos_dir ~/omg/videos --out_dir ~/omg/manual [--jobs 4]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import logging
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Sequence

import soundfile

INSTALL_HINT = ("install it with `apt-get install ffmpeg` (Debian/Ubuntu), `brew install ffmpeg` "
                "(macOS) or `conda install -c conda-forge ffmpeg`, or pass --ffmpeg /path/to/ffmpeg")


# The organisers' prepare_data.py keeps the full YouTube videos here, beside the clip folders.
DOWNLOAD_TEMP_DIR = "youtube_videos_temp"


class FfmpegNotFoundError(FileNotFoundError):
    """The ffmpeg program is not installed or not on PATH."""


class ClipError(RuntimeError):
    """One clip could not be converted (the message names the clip and the reason)."""


@dataclasses.dataclass
class PrepareReport:
    """What ``prepare_audio`` did.

    Attributes:
        converted: wavs written in this run.
        skipped: clips whose wav already existed.
        failed: (clip path, reason) for clips that could not be converted.
    """

    converted: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def find_ffmpeg(ffmpeg: str = "ffmpeg") -> str:
    """Returns the full path of the ffmpeg program.

    Args:
        ffmpeg: program name (looked up on PATH) or a path.

    Raises:
        FfmpegNotFoundError: not found, with the install command in the message.
    """
    found = shutil.which(ffmpeg)
    if found is None:
        raise FfmpegNotFoundError(f"ffmpeg program {ffmpeg!r} not found on PATH; {INSTALL_HINT}")
    return found


def list_clips(videos_dir: str | os.PathLike,
               extensions: Sequence[str] = (".mp4",)) -> list[pathlib.Path]:
    """Lists ``<videos_dir>/<video>/<utterance>.<ext>`` clips, sorted.

    The full videos the download script leaves in ``<videos_dir>/youtube_videos_temp/`` are not
    clips and are left out.

    Raises:
        FileNotFoundError: ``videos_dir`` is not a directory.
    """
    root = pathlib.Path(videos_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: videos directory not found; expected the download "
                                f"layout <videos_dir>/<video>/<utterance>.mp4")
    wanted = {e.lower() for e in extensions}
    return sorted(p for p in root.glob("*/*") if p.is_file() and p.suffix.lower() in wanted
                  and p.parent.name != DOWNLOAD_TEMP_DIR)


def audio_output_path(out_dir: str | os.PathLike, clip: pathlib.Path) -> pathlib.Path:
    """``<out_dir>/audio/<video>/<utterance stem>.wav`` for ``<videos_dir>/<video>/<clip>``."""
    return pathlib.Path(out_dir) / "audio" / clip.parent.name / (clip.stem + ".wav")


def extract_audio(ffmpeg: str, clip: pathlib.Path, output: pathlib.Path,
                  sample_rate: int = 16000, timeout_s: float | None = 600) -> None:
    """Converts one clip's audio track to a 16-bit mono wav at ``sample_rate``.

    The wav appears at ``output`` only if ffmpeg succeeded and the file reads back with at least
    one sample; otherwise nothing is left behind.

    Raises:
        ClipError: ffmpeg failed, timed out, or produced no audio.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".part")
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip),
               "-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav",
               str(partial)]
    try:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise ClipError(f"{clip}: ffmpeg did not finish within {timeout_s} s") from e
        except OSError as e:
            raise ClipError(f"{clip}: cannot run {ffmpeg} ({e})") from e
        if result.returncode != 0:
            message = " | ".join(result.stderr.strip().splitlines()[-3:]) or "no message"
            raise ClipError(f"{clip}: ffmpeg exited with status {result.returncode}: {message}")
        try:
            frames = soundfile.info(str(partial)).frames
        except (RuntimeError, soundfile.LibsndfileError) as e:
            raise ClipError(f"{clip}: ffmpeg wrote no readable wav ({e})") from e
        if frames <= 0:
            raise ClipError(f"{clip}: no audio samples (the clip may have no audio track)")
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()


def prepare_audio(videos_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  ffmpeg: str = "ffmpeg", sample_rate: int = 16000, jobs: int = 1,
                  overwrite: bool = False) -> PrepareReport:
    """Converts every clip under ``videos_dir`` whose wav is not there yet.

    Args:
        videos_dir: ``<videos_dir>/<video>/<utterance>.mp4``.
        out_dir: the builder's manual_dir; wavs go to ``<out_dir>/audio/<video>/<stem>.wav``.
        ffmpeg: ffmpeg program name or path.
        sample_rate: output rate in Hz.
        jobs: clips converted in parallel (each is one ffmpeg process).
        overwrite: convert again even when the wav exists.

    Returns:
        A ``PrepareReport``; failures are collected there, not raised.

    Raises:
        FfmpegNotFoundError: ffmpeg is missing (checked before anything is written).
        FileNotFoundError: ``videos_dir`` does not exist.
    """
    program = find_ffmpeg(ffmpeg)
    report = PrepareReport()
    todo = []
    for clip in list_clips(videos_dir):
        output = audio_output_path(out_dir, clip)
        if output.exists() and not overwrite:
            report.skipped.append(str(clip))
        else:
            todo.append((clip, output))

    def convert(item):
        clip, output = item
        try:
            extract_audio(program, clip, output, sample_rate)
            return str(clip), None
        except ClipError as e:
            return str(clip), str(e)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done, (clip, error) in enumerate(pool.map(convert, todo), start=1):
            if error is None:
                report.converted.append(clip)
            else:
                logging.warning("failed: %s", error)
                report.failed.append((clip, error))
            if done % 100 == 0:
                logging.info("%d / %d clips processed", done, len(todo))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 also when some clips failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos_dir", required=True, help="<videos_dir>/<video>/<utterance>.mp4")
    parser.add_argument("--out_dir", required=True, help="builder manual_dir (audio/ goes there)")
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--jobs", type=int, default=1, help="parallel ffmpeg processes")
    parser.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg program name or path")
    parser.add_argument("--overwrite", action="store_true", help="convert existing wavs again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        report = prepare_audio(args.videos_dir, args.out_dir, args.ffmpeg, args.sample_rate,
                               args.jobs, args.overwrite)
    except FileNotFoundError as e:  # includes FfmpegNotFoundError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"converted {len(report.converted)}, skipped {len(report.skipped)} (already there), "
          f"failed {len(report.failed)}")
    for clip, reason in report.failed:
        print(f"FAILED {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
