"""Tests for experiments/prepare_omg.py with a fake ``ffmpeg`` program (ffmpeg is not needed)."""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest
import soundfile

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "prepare_omg.py"
_spec = importlib.util.spec_from_file_location("prepare_omg", _SCRIPT)
prepare_omg = importlib.util.module_from_spec(_spec)
sys.modules["prepare_omg"] = prepare_omg  # dataclasses look their module up there
_spec.loader.exec_module(prepare_omg)

# Stands in for ffmpeg: the "clip" holds a sample count as text (or BAD / EMPTY); it logs each
# call, then writes a 16-bit wav at the requested rate to the output argument.
FAKE_FFMPEG = """#!{python}
import sys, numpy as np, soundfile
args = sys.argv[1:]
src, out, rate = args[args.index("-i") + 1], args[-1], int(args[args.index("-ar") + 1])
assert args[args.index("-ac") + 1] == "1" and "-vn" in args and out.endswith(".part")
with open("{log}", "a") as log:
    log.write(src + "\\n")
content = open(src).read().strip()
if content == "BAD":
    print("moov atom not found", file=sys.stderr)
    print(src + ": Invalid data found when processing input", file=sys.stderr)
    sys.exit(1)
if content == "EMPTY":
    soundfile.write(out, np.zeros(0), rate, format="WAV", subtype="PCM_16")
    sys.exit(0)
soundfile.write(out, 0.1 * np.ones(int(content)), rate, format="WAV", subtype="PCM_16")
"""


@pytest.fixture
def fake_ffmpeg(tmp_path, monkeypatch):
    bin_dir, log = tmp_path / "bin", tmp_path / "ffmpeg_calls.log"
    bin_dir.mkdir()
    program = bin_dir / "ffmpeg"
    program.write_text(FAKE_FFMPEG.format(python=sys.executable, log=log))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}")
    return log


def _calls(log):
    return log.read_text().splitlines() if log.exists() else []


def _clips(root, spec):
    for rel, content in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def test_missing_ffmpeg_message_has_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty_bin"))
    with pytest.raises(prepare_omg.FfmpegNotFoundError, match=r"apt-get install ffmpeg"):
        prepare_omg.find_ffmpeg()
    _clips(tmp_path / "videos", {"v1/utterance_1.mp4": "1600"})
    status = prepare_omg.main(["--videos_dir", str(tmp_path / "videos"), "--out_dir",
                               str(tmp_path / "out")])
    assert status == 2
    assert "apt-get install ffmpeg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_converts_skips_existing_and_reports_failures(tmp_path, fake_ffmpeg):
    videos, out = tmp_path / "videos", tmp_path / "manual"
    _clips(videos, {"v1/utterance_1.mp4": "1600", "v1/utterance_2.mp4": "BAD",
                    "v2/utterance_7.mp4": "800", "v2/utterance_8.mp4": "EMPTY",
                    "v2/notes.txt": "ignored",
                    "youtube_videos_temp/v1.mp4": "99999"})  # full video, not a clip
    existing = out / "audio" / "v2" / "utterance_7.wav"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"kept as is")

    report = prepare_omg.prepare_audio(videos, out, sample_rate=16000, jobs=2)
    assert report.converted == [str(videos / "v1" / "utterance_1.mp4")]
    assert report.skipped == [str(videos / "v2" / "utterance_7.mp4")]
    failed = dict(report.failed)
    assert sorted(failed) == [str(videos / "v1" / "utterance_2.mp4"),
                              str(videos / "v2" / "utterance_8.mp4")]
    assert "exited with status 1" in failed[str(videos / "v1" / "utterance_2.mp4")]
    assert "Invalid data found" in failed[str(videos / "v1" / "utterance_2.mp4")]
    assert "no audio samples" in failed[str(videos / "v2" / "utterance_8.mp4")]

    wav = out / "audio" / "v1" / "utterance_1.wav"
    info = soundfile.info(str(wav))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 1600)
    assert existing.read_bytes() == b"kept as is"
    # Failed clips leave nothing, not even a partial file.
    assert sorted(p.name for p in (out / "audio").rglob("*") if p.is_file()) == [
        "utterance_1.wav", "utterance_7.wav"]
    assert len(_calls(fake_ffmpeg)) == 3


def test_second_run_is_idempotent(tmp_path, fake_ffmpeg):
    videos, out = tmp_path / "videos", tmp_path / "manual"
    _clips(videos, {"v1/utterance_1.mp4": "1600", "v1/utterance_2.mp4": "BAD"})
    prepare_omg.prepare_audio(videos, out)
    wav = out / "audio" / "v1" / "utterance_1.wav"
    before = wav.read_bytes()
    report = prepare_omg.prepare_audio(videos, out)
    assert report.converted == [] and report.skipped == [str(videos / "v1" / "utterance_1.mp4")]
    assert [c for c in _calls(fake_ffmpeg)] == [str(videos / "v1" / "utterance_1.mp4"),
                                               str(videos / "v1" / "utterance_2.mp4"),
                                               str(videos / "v1" / "utterance_2.mp4")]
    assert wav.read_bytes() == before
    report = prepare_omg.prepare_audio(videos, out, sample_rate=8000, overwrite=True)
    assert len(report.converted) == 1 and soundfile.info(str(wav)).samplerate == 8000


def test_cli_reports_failures_without_failing(tmp_path, fake_ffmpeg):
    videos, out = tmp_path / "videos", tmp_path / "manual"
    _clips(videos, {"v1/utterance_1.mp4": "400", "v1/utterance_2.mp4": "BAD"})
    result = subprocess.run([sys.executable, str(_SCRIPT), "--videos_dir", str(videos),
                             "--out_dir", str(out)], capture_output=True, text=True,
                            env={"PATH": str(tmp_path / "bin")})
    assert result.returncode == 0, result.stderr
    assert "converted 1, skipped 0 (already there), failed 1" in result.stdout
    assert "FAILED" in result.stderr and "utterance_2.mp4" in result.stderr
    assert (out / "audio" / "v1" / "utterance_1.wav").is_file()


def test_missing_videos_dir(tmp_path, fake_ffmpeg):
    with pytest.raises(FileNotFoundError, match=r"nope: videos directory not found"):
        prepare_omg.prepare_audio(tmp_path / "nope", tmp_path / "out")
