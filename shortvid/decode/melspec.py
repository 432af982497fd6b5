"""Log-mel features of a mono waveform, in pure NumPy.

NumPy, not torchaudio: torchaudio is not installed here (nor pinned for torch 2.14.1), and NumPy keeps
the features in the decode layer, where data preparation, ``infer`` and ONNX preprocessing all reach
them with no model framework. The filterbank uses the HTK mel scale (``2595 log10(1 + f / 700)``), with
triangles of peak 1 and no area normalisation (as ``librosa.filters.mel(htk=True, norm=None)`` and
Kaldi's), made once per (rate, FFT size, bands, band edges) and cached. Frames are cut without padding
at the edges (Kaldi's ``snip_edges``): a Hann window of ``win_ms``, every ``hop_ms``, its power spectrum
by ``np.fft.rfft`` on the next power of two, then the mel bands' energies, floored, then the
natural log, all in float32. The work runs ``_BLOCK`` frames at a time, each block's windows written into
one zero-padded buffer reused across blocks: numpy's float32 ``rfft`` over more than ~100 rows at once, or
with its own padding (``n=``), cost several times more a row here. The mel bands are a matrix product in
pieces of at most 2**18 multiply-adds (``matmul_pieces``): OpenBLAS runs larger ones on two threads, and on a
busy 2-core machine waking the second made a 2 s call take 1.3 ms at load 1.5 and 20 ms at load 4, against
about 0.5 ms in pieces (BENCHMARKS.md, "Sound").
"""

from __future__ import annotations

import functools

import numpy as np

LOG_FLOOR = 1e-10
"""The smallest band energy before the log: silence gives ``log(LOG_FLOOR)`` (about -23.03) in every band."""
_BLOCK = 32  # frames an FFT call
_GEMM = 1 << 18  # multiply-adds a matmul call: OpenBLAS stays on the calling thread up to m * n * k = 65536 * 4


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """The HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """The inverse of ``hz_to_mel``."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filters, float32 ``[n_mels, n_fft // 2 + 1]``: band ``m`` rises from the
    ``m``-th of ``n_mels + 2`` points equally spaced in mel between ``fmin`` and ``fmax`` (the Nyquist
    frequency by default) to the next, where it is 1, and falls to the one after. Cached and read-only."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"mel bands need 0 <= fmin < fmax <= {sample_rate / 2:g} Hz, got {fmin:g} and {fmax:g}")
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"need at least 1 mel band and an FFT of at least 2, got {n_mels} and {n_fft}")
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    bank.flags.writeable = False
    return bank


def frame_count(n_samples: int, sample_rate: int, win_ms: float = 25.0, hop_ms: float = 10.0) -> int:
    """How many frames ``log_mel`` gives for ``n_samples``: 0 for none, else ``1 + (n - win) // hop``
    (at least 1: a waveform shorter than one window is zero-padded to one)."""
    win, hop = _window(sample_rate, win_ms), _hop(sample_rate, hop_ms)
    if n_samples <= 0:
        return 0
    return 1 + max(0, n_samples - win) // hop


def log_mel(samples: np.ndarray, sample_rate: int = 16000, n_mels: int = 64, win_ms: float = 25.0,
            hop_ms: float = 10.0, *, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """The log-mel spectrogram of a mono waveform ``samples`` (``[n]``, any float dtype, nominally in
    [-1, 1]): float32 ``[n_mels, frame_count(n)]``, the natural log of each band's power, floored at
    ``LOG_FLOOR``. Default: 64 bands over 0-8 kHz, 25 ms Hann windows every 10 ms (400 and 160 samples
    at 16 kHz, a 512-point FFT)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"samples must be one mono channel [n], got shape {samples.shape}")
    win, hop = _window(sample_rate, win_ms), _hop(sample_rate, hop_ms)
    frames = frame_count(len(samples), sample_rate, win_ms, hop_ms)
    n_fft = 1 << (win - 1).bit_length()
    bank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    if frames == 0:
        return np.zeros((n_mels, 0), dtype=np.float32)
    if len(samples) < win:
        samples = np.pad(samples, (0, win - len(samples)))
    windows = np.lib.stride_tricks.sliding_window_view(samples, win)[::hop][:frames]
    hann = _hann(win)
    padded = np.zeros((min(_BLOCK, frames), n_fft), dtype=np.float32)  # a block's windows, zero-padded to n_fft
    energies = np.empty((frames, n_mels), dtype=np.float32)
    for first in range(0, frames, _BLOCK):
        count = min(_BLOCK, frames - first)
        np.multiply(windows[first:first + count], hann, out=padded[:count, :win])
        spectrum = np.fft.rfft(padded[:count], axis=1)  # complex64
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        matmul_pieces(power, bank.T, energies[first:first + count])
    np.maximum(energies, LOG_FLOOR, out=energies)
    return np.ascontiguousarray(np.log(energies, out=energies).T)


def matmul_pieces(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``a @ b`` into ``out`` (float32 ``[m, n]``), a few rows of ``a`` a call: each call at most ``_GEMM``
    multiply-adds, under which OpenBLAS multiplies on the calling thread; each piece of a strided ``a`` copied
    contiguous (a piece at a time, a few kB)."""
    rows = max(1, _GEMM // (a.shape[1] * b.shape[1]))
    for first in range(0, len(a), rows):
        np.matmul(np.ascontiguousarray(a[first:first + rows]), b, out=out[first:first + rows])
    return out


def _window(sample_rate: int, win_ms: float) -> int:
    win = round(sample_rate * win_ms / 1000)
    if win < 2:
        raise ValueError(f"a window of {win_ms} ms at {sample_rate} Hz is under 2 samples")
    return win


def _hop(sample_rate: int, hop_ms: float) -> int:
    hop = round(sample_rate * hop_ms / 1000)
    if hop < 1:
        raise ValueError(f"a hop of {hop_ms} ms at {sample_rate} Hz is under 1 sample")
    return hop


@functools.lru_cache(maxsize=8)
def _hann(win: int) -> np.ndarray:
    """The periodic Hann window (as ``torch.hann_window`` and ``scipy.signal.get_window`` give it)."""
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)
    window.flags.writeable = False
    return window
