"""The machine: what a measurement ran on (benchmark and ablation reports), and which device to use."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CPU_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_int8", "amx_bf16")


def cpu_features() -> dict[str, bool]:
    """Which of the x86 features that decide int8/bf16 speed this CPU has (``/proc/cpuinfo`` flags).

    int8: ``avx512_vnni``/``avx_vnni`` (one-instruction u8 x s8 dot products) or ``amx_int8``;
    without them (AVX2 only) int8 convolutions use ``vpmaddubsw`` and gain little over fp32.
    bf16: ``avx512_bf16`` or ``amx_bf16``; without them bf16 is emulated and slower than fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {name: name in flags for name in CPU_FEATURES}


def memory_bytes() -> int | None:
    """The memory this process may use: physical memory, or the container's limit when lower (cgroup
    v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None where neither can be read."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))  # "max" (no limit) and v1's huge "unlimited" value lose to physical
    return min(limits) if limits else None


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto``: the first CUDA device when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe() -> dict:
    """CPU (with the SIMD features it has), cores, accelerator and the versions that decide the numbers
    (torch, PyAV/FFmpeg, Python)."""
    import av
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    simd = [name for name, present in cpu_features().items() if present]
    return {"arch": platform.machine(), "cpu": cpu_name(), "simd": simd, "cores": os.cpu_count(), "gpu": gpu,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "pyav": av.__version__,
            "libavcodec": av.library_versions.get("libavcodec"), "python": platform.python_version()}
