"""Where a run's model runs: the backends (PyTorch, ONNX Runtime) and the precisions each offers.

One table, read by ``Classifier.load``, ``shortvid.quantize``, the kit's ``ServerApi`` and the CLI's
choices. Which file each (backend, precision) runs is ``shortvid.quantize.ensure_onnx``'s concern.
"""

from __future__ import annotations

import os

BACKENDS = ("torch", "onnx")
# The precisions each backend runs (the first is the default); int8 files come from shortvid.quantize.
PRECISIONS = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8", "int8-dynamic")}
ALL_PRECISIONS = tuple(dict.fromkeys(p for choices in PRECISIONS.values() for p in choices))


def check_precision(backend: str, precision: str) -> None:
    """``ValueError`` naming the valid pairs unless ``backend`` is known and runs ``precision``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} ({', '.join(BACKENDS)})")
    if precision not in PRECISIONS[backend]:
        valid = "; ".join(f"{name}: {', '.join(choices)}" for name, choices in PRECISIONS.items())
        raise ValueError(f"precision {precision!r} is not available on the {backend!r} backend (valid: {valid})")


def from_environment(backend: str | None = None, precision: str | None = None) -> tuple[str, str]:
    """``backend`` and ``precision`` where given, else ``$SHORTVID_BACKEND`` and ``$SHORTVID_PRECISION``,
    else ``torch`` and ``fp32``; checked (the competition kit's ``ServerApi`` takes no arguments)."""
    backend = backend or os.environ.get("SHORTVID_BACKEND") or BACKENDS[0]
    precision = precision or os.environ.get("SHORTVID_PRECISION") or PRECISIONS[backend][0]
    check_precision(backend, precision)
    return backend, precision
