"""The HTTP service over a trained run (``shortvid serve RUN``): ``http`` (the app: routes, admission,
batching, model control), ``server`` (the uvicorn server that runs it), ``admission``, ``batcher``,
``control``, ``metrics`` and ``requests`` (reading uploads). Inference itself is ``shortvid.infer``.

``shortvid.serve.classifier``, ``shortvid.serve.batch`` and ``shortvid.serve.store`` were inference and
moved to ``shortvid.infer``: their names still import from the old paths, with a ``DeprecationWarning``
naming the new one, until the next release.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any, Callable


def moved(alias: str, *targets: ModuleType) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``alias``, a module whose names moved to ``targets``: each public name
    asked for comes from the first target that has it, with a ``DeprecationWarning`` naming where."""

    def __getattr__(name: str) -> Any:
        for target in targets:
            if not name.startswith("_") and hasattr(target, name):
                warnings.warn(f"{alias}.{name} moved to {target.__name__}.{name}; the old path goes in the next "
                              f"release", DeprecationWarning, stacklevel=2)
                return getattr(target, name)
        raise AttributeError(f"module {alias!r} has no attribute {name!r}")

    return __getattr__
