"""Sound: ``read_audio`` on real encoded videos (AAC in MP4, Opus in WebM, PCM crafted with PyAV) and the
``log_mel`` features: the 440 Hz tone of the synthetic videos, videos without sound, silent, short,
damaged and over-limit tracks, both placements."""

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import shortvid.decode.audio as audio_module
from shortvid.decode import (
    AudioSpec,
    DecodeLimits,
    FrameSpec,
    InvalidVideoError,
    Sound,
    VideoNotFoundError,
    log_mel,
    mel_filterbank,
    read_audio,
    read_frames,
)
from shortvid.decode.melspec import LOG_FLOOR, frame_count, hz_to_mel, mel_to_hz
from shortvid.synth.encode import EncodeSpec, encode_video

from conftest import pattern_frames


def write_pcm(path: Path, *, rate: int = 48000, layout: str = "mono", seconds: float = 2.0,
              amplitude: float = 0.1, hz: float | None = 440.0) -> Path:
    """An audio-only file of 16-bit PCM (Matroska, or MOV, whose clock counts samples), any rate and channel
    count: a tone of ``hz``, or with ``hz=None`` noise (every stretch differs: a window's time can be checked)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout=layout)
        channels = stream.codec_context.layout.nb_channels
        t = np.arange(round(rate * seconds)) / rate
        signal = np.sin(2 * np.pi * hz * t) if hz else np.random.default_rng(0).uniform(-1, 1, len(t))
        wave = (amplitude * signal * 32767).astype(np.int16)
        for start in range(0, len(wave), 1024):
            chunk = np.repeat(wave[start:start + 1024][None, :], channels, 0).T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_broadband(path: Path, *, codec: str, layout: str, rate: int = 48000, seconds: float = 2.5) -> Path:
    """Noise plus a chirp sweeping up to the Nyquist frequency, a different one per channel: content up to
    and past the 8 kHz an output at 16 kHz keeps, where two low-pass filters differ most. 16-bit PCM or AAC."""
    pcm = codec.startswith("pcm")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        channels = stream.codec_context.layout.nb_channels
        size = 1024 if pcm else stream.codec_context.frame_size or 1024
        t = np.arange(round(rate * seconds)) / rate
        noise = np.random.default_rng(1).standard_normal((channels, len(t)))
        signal = np.clip(0.2 * noise + 0.3 * np.sin(2 * np.pi * (50 + rate / 4 / seconds * t) * t), -1, 1)
        for start in range(0, len(t) - size + 1, size):
            chunk = signal[:, start:start + size]
            if pcm:
                data, sample_format = (chunk.T.reshape(1, -1) * 32767).astype(np.int16), "s16"
            else:
                data, sample_format = chunk.astype(np.float32), "fltp"
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=sample_format, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory, small_videos) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    frames = list(pattern_frames(40, 64, 112))
    spec = EncodeSpec(fps=10, gop=100, scenecut=False)
    paths = {"aac": small_videos["v0.mp4"]}  # 4 s of video and a 440 Hz tone
    for key, suffix, audio in (("opus", ".webm", True), ("silent_video", ".mp4", False)):
        codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
        paths[key] = encode_video(folder / f"{key}{suffix}", frames, EncodeSpec(**{**vars(spec), "codec": codec,
                                                                                   "audio": audio})).path
    paths["pcm"] = write_pcm(folder / "pcm.mkv", seconds=3.0)
    paths["noise"] = write_pcm(folder / "noise.mov", seconds=3.0, hz=None)
    paths["quiet"] = write_pcm(folder / "quiet.mkv", amplitude=0.0)
    paths["wide"] = write_pcm(folder / "wide.mkv", rate=96000, layout="7.1", seconds=1.0)
    paths["tone_44k"] = write_pcm(folder / "tone_44k.mkv", rate=44100, seconds=1.5)
    paths["noise_16k"] = write_pcm(folder / "noise_16k.mkv", rate=16000, seconds=1.5, hz=None)
    paths["broadband"] = write_broadband(folder / "broadband.mkv", codec="pcm_s16le", layout="mono")
    paths["broadband_stereo"] = write_broadband(folder / "broadband_stereo.mkv", codec="pcm_s16le", layout="stereo")
    paths["broadband_aac"] = write_broadband(folder / "broadband_aac.mp4", codec="aac", layout="stereo")
    paths["broadband_96k"] = write_broadband(folder / "broadband_96k.mkv", codec="pcm_s16le", layout="mono",
                                             rate=96000)
    return paths


def peak_hz(sound: Sound) -> float:
    real = sound.samples[sound.mask]
    spectrum = np.abs(np.fft.rfft(real * np.hanning(len(real))))
    return float(np.argmax(spectrum) * sound.sample_rate / len(real))


# -- AudioSpec ---------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(sample_rate=4000), dict(sample_rate=16000.0), dict(seconds=0),
                                     dict(seconds=61), dict(seconds=True), dict(placement="middle"),
                                     dict(windows=0), dict(windows=17)])
def test_audio_spec_refuses_bad_options(options):
    with pytest.raises(ValueError):
        AudioSpec(**options)


def test_audio_spec_round_trips():
    spec = AudioSpec(seconds=2.5, placement="spread", windows=2)
    assert AudioSpec.from_dict(spec.to_dict()) == spec and spec.length == 40000
    assert AudioSpec.from_dict({"seconds": 2.5}) == AudioSpec(seconds=2.5)


# -- reading -----------------------------------------------------------------------------------
def test_aac_track_gives_16khz_mono_with_the_tone(media):
    sound = read_audio(media["aac"], AudioSpec(seconds=2.0))
    assert sound.status == "ok" and sound.reason == ""
    assert sound.samples.dtype == np.float32 and sound.samples.shape == (32000,) and sound.valid == 32000
    assert (sound.codec, sound.source_rate, sound.channels, sound.sample_rate) == ("aac", 48000, 1, 16000)
    assert sound.duration == pytest.approx(4.0, abs=0.05) and sound.starts == (0.0,)
    assert peak_hz(sound) == pytest.approx(440, abs=2)
    assert np.abs(sound.samples).max() == pytest.approx(0.05, rel=0.1)  # the encoder's amplitude


def test_opus_in_webm_and_pcm_give_the_tone(media):
    for key in ("opus", "pcm"):
        sound = read_audio(media[key], AudioSpec(seconds=1.0))
        assert sound.status == "ok" and sound.valid == 16000, (key, sound.to_dict())
        assert peak_hz(sound) == pytest.approx(440, abs=2), key


def test_every_source_kind_reads_the_same(media):
    path = media["aac"]
    expected = read_audio(path, AudioSpec(seconds=1.0)).samples
    with open(path, "rb") as handle:
        assert np.array_equal(read_audio(handle, AudioSpec(seconds=1.0)).samples, expected)
        assert not handle.closed
    assert np.array_equal(read_audio(path.read_bytes(), AudioSpec(seconds=1.0)).samples, expected)
    assert np.array_equal(read_audio(io.BytesIO(path.read_bytes()), AudioSpec(seconds=1.0)).samples, expected)


def test_no_audio_stream_is_none_and_masked(media):
    sound = read_audio(media["silent_video"], AudioSpec(seconds=2.0))
    assert sound.status == "none" and sound.valid == 0 and sound.samples.shape == (32000,)
    assert not sound.samples.any() and sound.codec is None


def test_silent_audio_is_silent_but_real(media):
    sound = read_audio(media["quiet"], AudioSpec(seconds=1.0))
    assert sound.status == "silent" and sound.valid == 16000


def test_audio_shorter_than_asked_is_masked_at_the_end(media):
    sound = read_audio(media["aac"], AudioSpec(seconds=8.0))
    assert sound.status == "ok" and 60000 < sound.valid < 128000
    assert sound.mask[: sound.valid].all() and not sound.samples[sound.valid:].any()


@pytest.mark.parametrize("seconds", [1.0, 2.0])
def test_spread_windows_cover_the_track(media, seconds):
    sound = read_audio(media["aac"], AudioSpec(seconds=seconds, placement="spread", windows=4))
    assert sound.status == "ok" and sound.valid == sound.samples.shape[0] == round(16000 * seconds)
    assert len(sound.starts) == 4 and sound.starts == tuple(sorted(sound.starts))
    assert sound.starts[0] > 0 and sound.starts[-1] + seconds / 4 <= 4.0 + 1e-6
    assert peak_hz(sound) == pytest.approx(440, abs=4)  # the windows' joins add little else


def test_spread_on_a_track_no_longer_than_asked_reads_it_from_the_start(media):
    start = read_audio(media["pcm"], AudioSpec(seconds=4.0))
    spread = read_audio(media["pcm"], AudioSpec(seconds=4.0, placement="spread"))
    assert spread.starts == (0.0,) and np.array_equal(spread.samples, start.samples)


@pytest.mark.parametrize("windows", [2, 4])
def test_spread_windows_take_their_own_time(media, windows):
    """Each window of a noise track holds the samples of its start time, as read from the start, within a
    sample (a window resampled from another packet's start is a fraction of a sample off the whole read)."""
    sound = read_audio(media["noise"], AudioSpec(seconds=1.0, placement="spread", windows=windows))
    whole = read_audio(media["noise"], AudioSpec(seconds=3.0)).samples
    width = 16000 // windows
    assert sound.valid == 16000 and len(sound.starts) == windows
    for i, start in enumerate(sound.starts):
        at = round(start * 16000)
        window = sound.samples[i * width + 50:(i + 1) * width - 50]
        match = {shift: np.corrcoef(window, whole[at + shift + 50:at + shift + width - 50])[0, 1]
                 for shift in range(-4, 5)}
        best = max(match, key=match.get)
        assert abs(best) <= 1 and match[best] > 0.7, (i, match)  # white noise: other shifts near 0


# -- downmixing and resampling: NumPy's decimation, FFmpeg's resampler -------------------------------
@pytest.fixture
def decimations(monkeypatch) -> list:
    """The windows NumPy's decimation filtered (one entry a run placed), counted as they happen."""
    calls = []
    place = audio_module._Decimator.place

    def counted(self, *args):
        calls.append(self.ratio)
        return place(self, *args)

    monkeypatch.setattr(audio_module._Decimator, "place", counted)
    return calls


def ffmpeg_resampled(path: Path, spec: AudioSpec, monkeypatch) -> Sound:
    """The sound as FFmpeg's resampler gives it: NumPy's decimation takes no input kind within."""
    with monkeypatch.context() as patch:
        patch.setattr(audio_module._Decimator, "takes", staticmethod(lambda kind, rate: False))
        return read_audio(path, spec)


@pytest.mark.parametrize("key, ratio", [("broadband", 3), ("broadband_stereo", 3), ("broadband_aac", 3),
                                        ("broadband_96k", 6), ("noise", 3)])
@pytest.mark.parametrize("placement", ["start", "spread"])
def test_numpy_decimation_is_close_to_ffmpegs_resampler(media, key, ratio, placement, decimations, monkeypatch):
    """Whole-multiple rates, mono or stereo, are decimated in NumPy: the log-mel stays within a percent of
    FFmpeg's resampler's (its filter: 0.97 cut-off, Kaiser beta 9; ours has 97 taps at 3:1), on content up to
    the Nyquist frequency, where two filters differ most; from the track's start, so are the samples (but the
    first few: FFmpeg mirrors the track's first samples before it, we put zeros). A spread window sits at the
    input sample nearest its start; FFmpeg's, at the output sample nearest (up to half an output sample off:
    the same spectrum, other samples where the content reaches the Nyquist frequency)."""
    spec = AudioSpec(seconds=1.0, placement=placement, windows=2)
    ours = read_audio(media[key], spec)
    assert decimations and set(decimations) == {ratio}
    theirs = ffmpeg_resampled(media[key], spec, monkeypatch)
    assert ours.status == theirs.status == "ok" and ours.starts == theirs.starts
    assert ours.valid == theirs.valid == 16000
    gap = np.abs(log_mel(ours.samples) - log_mel(theirs.samples))  # measured: mean 0.001-0.004, p99 0.02-0.07
    assert gap.mean() < 0.01 and np.percentile(gap, 99) < 0.15, (gap.mean(), np.percentile(gap, 99))
    if placement == "start":  # measured: 0.3-0.5%
        a, b = ours.samples[32:], theirs.samples[32:]
        assert np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)) < 0.01


def test_stereo_is_summed_as_ffmpeg_rematrixes_it(media, decimations, monkeypatch):
    """(L + R) / sqrt(2): the same level as FFmpeg's downmix, not the mean."""
    spec = AudioSpec(seconds=1.0)
    ours, theirs = read_audio(media["broadband_stereo"], spec), ffmpeg_resampled(media["broadband_stereo"], spec,
                                                                                  monkeypatch)
    assert decimations
    assert np.sqrt(np.mean(ours.samples ** 2)) == pytest.approx(np.sqrt(np.mean(theirs.samples ** 2)), rel=0.01)


def test_other_rates_go_to_ffmpegs_resampler(media, decimations):
    for key in ("tone_44k", "wide"):  # 44.1 kHz (no whole ratio); 7.1 at 96 kHz (a layout NumPy's path leaves)
        sound = read_audio(media[key], AudioSpec(seconds=1.0))
        assert sound.status == "ok" and sound.valid > 15900, sound.to_dict()  # "wide" is 1 s long: its tail masked
    assert not decimations
    assert peak_hz(read_audio(media["tone_44k"], AudioSpec(seconds=1.0))) == pytest.approx(440, abs=2)


def test_a_source_at_the_output_rate_is_copied(media, decimations):
    sound = read_audio(media["noise_16k"], AudioSpec(seconds=1.0))
    assert decimations == [1]
    with av.open(str(media["noise_16k"])) as container:
        source = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    assert np.array_equal(sound.samples, source[:16000].astype(np.float32) / 32768)


def test_reading_the_sound_leaves_the_other_streams_as_they_were(media):
    with av.open(str(media["aac"])) as container:
        video = container.streams.video[0]
        before = video.discard
        sound = audio_module.sound_of("aac", container, AudioSpec(seconds=1.0), DecodeLimits(), None)
        assert sound.status == "ok" and video.discard == before
        assert next(container.decode(video=0)).width == 64  # the video still demuxes


# -- what must not cost the video ----------------------------------------------------------------
def test_unopenable_files_raise_the_usual_errors(small_videos):
    with pytest.raises(InvalidVideoError):
        read_audio(small_videos["text.mp4"])
    with pytest.raises(VideoNotFoundError):
        read_audio(small_videos["missing.mp4"])


def test_limits_refuse_many_channels_and_high_rates(media):
    assert read_audio(media["wide"], AudioSpec(seconds=1.0)).status == "ok"  # the defaults admit 7.1 at 96 kHz
    for limits, words in ((DecodeLimits(max_channels=2), "8 channels"), (DecodeLimits(max_sample_rate=48000),
                                                                         "96000 Hz")):
        sound = read_audio(media["wide"], AudioSpec(seconds=1.0), limits=limits)
        assert sound.status == "broken" and "limit" in sound.reason and words in sound.reason, sound.reason
        assert sound.valid == 0 and not sound.samples.any()


def test_limits_bound_the_seconds_decoded(media):
    sound = read_audio(media["aac"], AudioSpec(seconds=2.0), limits=DecodeLimits(max_audio_seconds=0.5))
    assert sound.status == "broken" and "seconds decoded" in sound.reason


def test_time_limit_gives_a_broken_sound(media):
    sound = read_audio(media["aac"], AudioSpec(seconds=2.0), timeout=1e-9)
    assert sound.status == "broken" and "time limit" in sound.reason


def audio_packet_spans(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as container:
        return [(packet.pos, packet.size) for packet in container.demux(container.streams.audio[0])
                if packet.pos is not None and packet.size]


@pytest.fixture(scope="module")
def damaged_audio(media, tmp_path_factory) -> dict[str, Path]:
    """The AAC video with its audio packets 5-39 (0.1-0.85 s) overwritten with random bytes, and cut at 60%."""
    folder = tmp_path_factory.mktemp("damaged_audio")
    data = bytearray(media["aac"].read_bytes())
    rng = np.random.default_rng(0)
    for position, size in audio_packet_spans(media["aac"])[5:40]:
        data[position:position + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    (folder / "damaged.mp4").write_bytes(bytes(data))
    (folder / "cut.mp4").write_bytes(bytes(data[: len(data) * 6 // 10]))
    (folder / "cut_only.mp4").write_bytes(media["aac"].read_bytes()[: len(data) * 6 // 10])
    return {path.stem: path for path in folder.iterdir()}


def test_damaged_packets_are_masked_and_later_samples_keep_their_time(media, damaged_audio):
    good = read_audio(media["aac"], AudioSpec(seconds=4.0))
    sound = read_audio(damaged_audio["damaged"], AudioSpec(seconds=4.0))
    assert sound.status == "ok" and "damaged audio packets skipped" in sound.reason
    assert 40000 < sound.valid < 64000 - 16000 * 0.6  # the 0.75 s of damaged packets are masked
    assert not sound.mask[4000:12000].any() and sound.mask[20000:60000].all()
    # in time to a sample: the 440 Hz tone at 0.05 moves up to 0.0086 a sample
    assert np.abs(sound.samples[20000:60000] - good.samples[20000:60000]).max() < 0.005


def test_a_cut_file_gives_its_first_samples(media, damaged_audio):
    good = read_audio(media["aac"], AudioSpec(seconds=4.0))
    sound = read_audio(damaged_audio["cut_only"], AudioSpec(seconds=4.0))
    assert sound.status == "ok" and 16000 < sound.valid < 64000 and sound.mask[: sound.valid].all()
    assert np.array_equal(sound.samples[sound.mask], good.samples[sound.mask])


@pytest.mark.parametrize("placement", ["start", "spread"])
def test_damaged_audio_never_fails_the_video(damaged_audio, placement):
    for path in damaged_audio.values():
        sound = read_audio(path, AudioSpec(seconds=2.0, placement=placement))
        assert sound.status in ("ok", "broken") and sound.samples.shape == (32000,), sound.to_dict()
        assert sound.valid < 32000 or sound.reason or path.stem == "cut_only", sound.to_dict()


@pytest.mark.parametrize("placement", ["start", "spread"])
def test_read_frames_reads_the_same_sound_from_the_open_file(media, placement):
    """One open for frames and sound: the samples read_audio gives, after the video's packets moved the
    demuxer (the start placement rewinds to the priming packets before time 0)."""
    spec = AudioSpec(seconds=2.0, placement=placement)
    for key in ("aac", "opus", "silent_video"):
        clip = read_frames(media[key], FrameSpec(k=3, size=32), audio=spec)
        alone = read_audio(media[key], spec)
        assert clip.frames.shape[0] == 3 and clip.sound.status == alone.status, key
        assert np.array_equal(clip.sound.samples, alone.samples) and np.array_equal(clip.sound.mask, alone.mask), key
    assert read_frames(media["aac"], FrameSpec(k=3, size=32)).sound is None


@pytest.mark.parametrize("placement", ["start", "spread"])
def test_damaged_audio_never_fails_the_frames(damaged_audio, placement):
    for path in damaged_audio.values():
        clip = read_frames(path, FrameSpec(k=2, size=32), audio=AudioSpec(seconds=2.0, placement=placement))
        assert clip.frames.shape[0] == 2 and clip.sound.status in ("ok", "broken")


# -- log-mel -----------------------------------------------------------------------------------
def test_log_mel_shapes():
    for n, frames in ((0, 0), (100, 1), (400, 1), (559, 1), (560, 2), (64000, 398)):
        assert frame_count(n, 16000) == frames
        out = log_mel(np.zeros(n, dtype=np.float32), 16000)
        assert out.shape == (64, frames) and out.dtype == np.float32
    assert log_mel(np.zeros(16000), 16000, n_mels=40, win_ms=32, hop_ms=16).shape == (40, 1 + (16000 - 512) // 256)
    with pytest.raises(ValueError):
        log_mel(np.zeros((2, 100)), 16000)


def test_silence_gives_the_floor():
    assert np.all(log_mel(np.zeros(8000), 16000) == np.float32(np.log(LOG_FLOOR)))


@pytest.mark.parametrize("hz", [440.0, 1000.0, 3000.0])
def test_a_sine_peaks_in_the_band_holding_its_frequency(hz):
    t = np.arange(16000) / 16000
    features = log_mel(0.5 * np.sin(2 * np.pi * hz * t), 16000)
    band = int(np.argmax(features.mean(axis=1)))
    edges = mel_to_hz(np.linspace(0, hz_to_mel(8000), 66))
    assert edges[band] < hz < edges[band + 2]  # inside the triangle of the loudest band
    assert features[band].mean() > features.mean() + 5


def test_the_tone_of_a_video_peaks_in_its_band(media):
    sound = read_audio(media["aac"], AudioSpec(seconds=2.0))
    band = int(np.argmax(log_mel(sound.samples, sound.sample_rate).mean(axis=1)))
    edges = mel_to_hz(np.linspace(0, hz_to_mel(8000), 66))
    assert edges[band] < 440 < edges[band + 2]


@pytest.mark.parametrize("n", [400, 16000, 5280, 5440, 64000])  # 1, 98, 31, 32 and 398 frames
def test_log_mel_in_blocks_is_the_one_shot_formula(n):
    """The blocked FFTs and matrix products give what one FFT and one product over all frames give."""
    samples = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    frames = frame_count(n, 16000)
    windows = np.stack([samples[i * 160:i * 160 + 400] for i in range(frames)]).astype(np.float64)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(windows * hann, n=512, axis=1)) ** 2
    expected = np.log(np.maximum(power @ mel_filterbank(16000, 512, 64).T.astype(np.float64), LOG_FLOOR)).T
    assert np.allclose(log_mel(samples, 16000), expected, atol=1e-3)


def test_filterbank_is_cached_and_triangular():
    bank = mel_filterbank(16000, 512, 64)
    assert bank is mel_filterbank(16000, 512, 64) and not bank.flags.writeable
    assert bank.shape == (64, 257) and bank.max() <= 1 and np.all(bank.max(axis=1) > 0.5)
    assert np.array_equal(hz_to_mel(mel_to_hz(np.array([0.0, 1000.0]))).round(6), [0.0, 1000.0])
    with pytest.raises(ValueError):
        mel_filterbank(16000, 512, 64, fmax=9000)
