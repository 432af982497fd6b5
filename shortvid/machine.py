"""What machine a measurement ran on, for benchmark and ablation reports."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """CPU, cores, accelerator and the versions that decide the numbers (torch, PyAV/FFmpeg, Python)."""
    import av
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"arch": platform.machine(), "cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "pyav": av.__version__,
            "libavcodec": av.library_versions.get("libavcodec"), "python": platform.python_version()}
