"""Where a run's model runs: the backends (PyTorch, ONNX Runtime) and the precisions each offers.

One table, read by ``Classifier.load``, ``shortvid.quantize``, the kit's ``ServerApi`` and the CLI's
choices. Which file each (backend, precision) runs is ``shortvid.quantize.ensure_onnx``'s concern.

``auto`` (the default everywhere) is not a third backend but a choice between the two, made by
``Classifier.load`` for the device and precision asked: ONNX Runtime where it can run them (it gives
the same answers as PyTorch and is faster on the CPU), else PyTorch (docs/onnx.md, "Picking the backend").
"""

from __future__ import annotations

import os

AUTO = "auto"
# The precisions each backend runs (the first is the default); int8 files come from shortvid.quantize.
_CONCRETE = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8", "int8-dynamic")}
ALL_PRECISIONS = tuple(dict.fromkeys(p for choices in _CONCRETE.values() for p in choices))
PRECISIONS = {AUTO: ALL_PRECISIONS, **_CONCRETE}  # auto runs each precision on a backend that runs it
BACKENDS = tuple(PRECISIONS)  # auto first: the default
AUTO_ORDER = ("onnx", "torch")  # what auto tries, fastest first


def check_precision(backend: str, precision: str) -> None:
    """``ValueError`` naming the valid pairs unless ``backend`` is known and runs ``precision``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} ({', '.join(BACKENDS)})")
    if precision not in PRECISIONS[backend]:
        valid = "; ".join(f"{name}: {', '.join(choices)}" for name, choices in PRECISIONS.items())
        raise ValueError(f"precision {precision!r} is not available on the {backend!r} backend (valid: {valid})")


def auto_candidates(precision: str) -> tuple[str, ...]:
    """The backends ``auto`` may resolve to for ``precision``, preferred first."""
    check_precision(AUTO, precision)
    return tuple(backend for backend in AUTO_ORDER if precision in PRECISIONS[backend])


def from_environment(backend: str | None = None, precision: str | None = None) -> tuple[str, str]:
    """``backend`` and ``precision`` where given, else ``$SHORTVID_BACKEND`` and ``$SHORTVID_PRECISION``,
    else ``auto`` and ``fp32``; checked (the competition kit's ``ServerApi`` takes no arguments)."""
    backend = backend or os.environ.get("SHORTVID_BACKEND") or BACKENDS[0]
    precision = precision or os.environ.get("SHORTVID_PRECISION") or PRECISIONS[backend][0]
    check_precision(backend, precision)
    return backend, precision
