"""Sound: what reading a video's sound and its log-mel features costs on top of the keyframe path, the way
serving and extraction read it: `read_frames(path, 3, size=256, crop=224, audio=AudioSpec(seconds=N))`, the
sound read from the file already open for the frames, then `log_mel` (64 bands, 25 ms windows every 10 ms).

Baseline: `frames`, the same `read_frames` call without sound, in the same run. Each video is read by
every method in turn (round-robin, a new shuffled order per video, repeated). The main number is a
method's **extra** cost: the median over videos of its per-video median less `frames`' (the issue's
target: at most 1.5 ms). Methods:

- `sound-Ns`: N seconds from the start of the track (16 kHz mono; NumPy's decimation where the source rate
  is a whole multiple of 16 kHz, FFmpeg's resampler otherwise), then `log_mel`;
- `ffmpeg-Ns` (`--variants`): the same with FFmpeg's resampler forced (the path before NumPy's decimation);
- `spread-Ns` (`--variants`): 4 windows spread over the track, a seek each;
- `read_audio-Ns` (`--variants`): `read_audio` alone, which opens the file itself (no frames), then `log_mel`;
- `mel-Ns` (`--variants`): `log_mel` alone on N seconds of samples.

Also prints how far NumPy's samples and features are from FFmpeg's resampler's on the same videos (RMS
difference of the samples over their RMS, and mean and 99th-percentile absolute difference of the log-mel,
natural log units, cells more than 80 dB under the loudest floored there), and the Sound statuses. Prints JSON
(machine, corpus, load average, each method's median and p95 ms/video, extra ms, ratio to `frames`), then a
Markdown table.

    python bench/audio.py [--corpus real-shaped] [--videos 25] [--repeats 3] [--seconds 1 2 4] [--variants]
                          [--json out.json]
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
from collections import Counter
from datetime import date
from pathlib import Path
from unittest import mock

import numpy as np

from shortvid.decode import AudioSpec, log_mel, read_audio, read_frames
from shortvid.decode import audio as audio_module

from common import CROP, SIZE, K, add_corpus_argument, corpus, interleaved, machine, make_parser, p95, write_json

TARGET_MS = 1.5
QUIET = 18.42  # log-mel cells compared down to 80 dB (power 1e-8) under a clip's loudest


def ffmpeg_resampler() -> contextlib.AbstractContextManager:
    """Within it, every sound is resampled by FFmpeg (NumPy's decimation takes no input kind)."""
    return mock.patch.object(audio_module._Decimator, "takes", staticmethod(lambda kind, rate: False))


def with_sound(spec: AudioSpec, *, ffmpeg: bool = False):
    def call(path: Path) -> np.ndarray:
        with ffmpeg_resampler() if ffmpeg else contextlib.nullcontext():
            clip = read_frames(path, K, size=SIZE, crop=CROP, audio=spec)
        return log_mel(clip.sound.samples, clip.sound.sample_rate)
    return call


def alone(spec: AudioSpec):
    def call(path: Path) -> np.ndarray:
        sound = read_audio(path, spec)
        return log_mel(sound.samples, sound.sample_rate)
    return call


def closeness(paths: list[Path], spec: AudioSpec) -> dict:
    """How far NumPy's decimation is from FFmpeg's resampler on ``paths``: per video, the RMS of the sample
    difference over the samples' RMS and the log-mel's mean and 99th-percentile absolute difference; each the
    median and the largest over the videos."""
    rms, mean, high = [], [], []
    for path in paths:
        numpy_sound = read_audio(path, spec)
        with ffmpeg_resampler():
            ffmpeg_sound = read_audio(path, spec)
        real = numpy_sound.mask & ffmpeg_sound.mask
        if numpy_sound.status != "ok" or not real.any():
            continue
        a, b = numpy_sound.samples[real], ffmpeg_sound.samples[real]
        rms.append(float(np.sqrt(np.mean((a - b) ** 2) / max(np.mean(b ** 2), 1e-20))))
        mels = [log_mel(sound.samples, sound.sample_rate) for sound in (numpy_sound, ffmpeg_sound)]
        floor = max(float(mel.max()) for mel in mels) - QUIET
        gap = np.abs(np.maximum(mels[0], floor) - np.maximum(mels[1], floor))
        mean.append(float(gap.mean()))
        high.append(float(np.percentile(gap, 99)))
    return {name: {"median": round(statistics.median(values), 4), "max": round(max(values), 4)}
            for name, values in (("sample_rms_ratio", rms), ("log_mel_mean_abs", mean), ("log_mel_p99_abs", high))
            if values}


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, default="real-shaped")
    parser.add_argument("--videos", type=int, default=25, help="videos of the corpus (default 25)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the videos (default 3)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="seconds of audio a video (default 1 2 4)")
    parser.add_argument("--variants", action="store_true",
                        help="add FFmpeg's resampler, spread windows, read_audio alone and log_mel alone")
    args = parser.parse_args()
    paths = corpus(args.corpus, args.videos)
    calls = {"frames": lambda path: read_frames(path, K, size=SIZE, crop=CROP)}
    for seconds in args.seconds:
        calls[f"sound-{seconds:g}s"] = with_sound(AudioSpec(seconds=seconds))
    if args.variants:
        for seconds in args.seconds:
            wave = np.random.default_rng(0).uniform(-0.1, 0.1, round(16000 * seconds)).astype(np.float32)
            calls.update({
                f"ffmpeg-{seconds:g}s": with_sound(AudioSpec(seconds=seconds), ffmpeg=True),
                f"spread-{seconds:g}s": with_sound(AudioSpec(seconds=seconds, placement="spread")),
                f"read_audio-{seconds:g}s": alone(AudioSpec(seconds=seconds)),
                f"mel-{seconds:g}s": lambda path, wave=wave: log_mel(wave, 16000),
            })
    statuses = Counter(read_audio(path, AudioSpec(seconds=args.seconds[0])).status for path in paths)
    close = {f"{seconds:g}s": closeness(paths, AudioSpec(seconds=seconds)) for seconds in args.seconds}
    for call in calls.values():  # warm-up: imports, caches, the filterbank and the filters
        call(paths[0])
    load_before = os.getloadavg()[0]
    times = interleaved(calls, paths, args.repeats)
    per_video = {name: {path: statistics.median(values) for path, values in per.items()} for name, per in times.items()}
    base = per_video["frames"]
    methods = {}
    for name, medians in per_video.items():
        median = statistics.median(medians.values())
        extra = None if name == "frames" or name.startswith(("read_audio", "mel")) else \
            statistics.median(medians[path] - base[path] for path in paths)
        methods[name] = {"median_ms": round(median, 3), "p95_ms": round(p95(list(medians.values())), 3),
                         "extra_ms": None if extra is None else round(extra, 3),
                         "ratio_to_frames": round(median / statistics.median(base.values()), 3)}
    report = {
        "machine": machine(), "date": date.today().isoformat(), "corpus": args.corpus, "videos": len(paths),
        "repeats": args.repeats, "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "statuses": dict(statuses), "numpy_vs_ffmpeg": close, "methods": methods,
    }
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    print(f"\n{args.corpus}, {len(paths)} videos, {args.repeats} repeats, load average {load_before:.1f}")
    print(f"| method | median ms/video | p95 ms | extra ms over frames | × frames | extra ≤ {TARGET_MS} ms |")
    print("|---|---|---|---|---|---|")
    for name, row in methods.items():
        extra = row["extra_ms"]
        meets = "" if extra is None else ("yes" if extra <= TARGET_MS else "no")
        print(f"| {name} | {row['median_ms']:.2f} | {row['p95_ms']:.2f} | {'' if extra is None else f'{extra:.2f}'} "
              f"| {row['ratio_to_frames']:.2f} | {meets} |")


if __name__ == "__main__":
    main()
