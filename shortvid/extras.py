"""The optional parts of shortvid and the extras that install them.

The core (decoding, data, models, training, evaluation, prediction with PyTorch) needs none of them.
``pip install 'shortvid[serve]'`` adds the HTTP service, ``[onnx]`` ONNX export, the ONNX Runtime
backend and int8 quantisation, ``[report]`` the plots of ``shortvid analyze``, ``[parquet]`` Parquet
manifests and outputs, ``[ray]`` the Ray engine of ``predict`` and ``extract``; ``[all]`` is all of
them (what ``make`` installs). A feature whose extra is missing says so, and how to install it,
instead of failing on an import deep inside.
"""

from __future__ import annotations

import importlib

from .errors import ShortvidError

EXTRAS = {
    "serve": ("fastapi", "fastapi_offline", "uvicorn", "python_multipart"),
    "onnx": ("onnx", "onnxruntime"),
    "report": ("matplotlib",),
    "parquet": ("pyarrow",),
    "ray": ("ray", "pyarrow"),
}


class MissingExtraError(ShortvidError, ImportError):
    """A feature needs an optional extra that is not installed."""


def require(extra: str, feature: str) -> None:
    """Raise ``MissingExtraError`` naming ``feature`` and the install command unless every module of
    ``extra`` is installed."""
    missing = [module for module in EXTRAS[extra] if not _installed(module)]
    if missing:
        raise MissingExtraError(feature, f"needs the '{extra}' extra ({', '.join(missing)} not installed): "
                                         f"pip install 'shortvid[{extra}]'")



def _installed(module: str) -> bool:
    """Whether ``module`` imports (the features that require it import it next anyway)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
