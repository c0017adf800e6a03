"""Memory budgets: parsing ``--max-memory``, the default budget of a device, and the allocator headroom.

The planner (:mod:`mibench.planning.memory`) counts live tensors. Allocators hold more than that at their
peak: glibc's malloc keeps freed tensors of up to 32 MB in its heap (measured on CPU: 1.3-1.45x the live
working memory of an attribution, see ``benchmarks/memory_plan.py``), and PyTorch's CUDA caching allocator
keeps freed blocks reserved and fragments. A batch therefore *fits* a budget when
``weights + HEADROOM * working memory <= budget`` (the weights are one allocation each and need none).
"""

from __future__ import annotations

import re

from mibench.errors import MibenchError

#: Factor on the working memory (beyond the weights) for the allocator's retention, by device type.
HEADROOM = {"cpu": 1.5}
ACCELERATOR_HEADROOM = 1.25
#: The share of the machine's available RAM a CPU run may plan for by default.
CPU_DEFAULT_SHARE = 0.8

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class BudgetError(MibenchError, ValueError):
    """A memory size that cannot be read, or a device whose free memory is unknown."""


def parse_size(text: str) -> int:
    """``"80GB"`` (10^9 bytes), ``"80GiB"`` / ``"80G"`` (2^30), ``"512MB"``, ``"1.5TiB"`` or plain bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise BudgetError(f"--max-memory: cannot read {text!r}; write e.g. 80GB, 40GiB or 512MB")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise BudgetError(f"--max-memory must be positive, got {text!r}")
    return int(value)


def format_size(n: float) -> str:
    """Bytes as a short human-readable size (binary units, as GPU tools report them)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def headroom(device_type: str) -> float:
    return HEADROOM.get(device_type, ACCELERATOR_HEADROOM)


def default_budget(device: str) -> int:
    """The memory a run on ``device`` may plan for: a GPU's free memory now, or a share of available RAM."""
    import torch

    from mibench.models.loading import resolve_device

    kind = torch.device(resolve_device(device)).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BudgetError(f"device {device!r}: no CUDA GPU is visible, so its free memory is unknown; "
                              "give --max-memory (e.g. --max-memory 80GB)")
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if kind == "cpu":
        return int(CPU_DEFAULT_SHARE * available_ram())
    raise BudgetError(f"device {device!r}: its free memory is unknown; give --max-memory")


def available_ram() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` (Linux), else the total physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
