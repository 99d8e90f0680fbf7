"""Where calibrations live: one file per device fingerprint, written atomically.

The fingerprint is what makes timings transferable: the device (CPU model or GPU name), the
thread count and the torch version. A distributed study points every worker at one cache
directory (``TTP_SEARCH_CACHE``) so the device is calibrated once.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from pathlib import Path

import torch

from ttp_search._cache import atomic_write_bytes, cache_dir

__all__ = [
    "FORMAT_VERSION",
    "atomic_write_bytes",
    "cache_dir",
    "calibration_path",
    "device_fingerprint",
    "fingerprint_key",
]

FORMAT_VERSION = 2


def cpu_model_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    match = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def device_fingerprint(device: torch.device | str = "cpu", threads: int | None = None) -> dict:
    """What a calibration is valid for. Two processes with equal fingerprints share one file."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_model_name()
    return {
        "device_type": device.type,
        "device_name": name,
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "torch": torch.__version__.split("+")[0],
        "format_version": FORMAT_VERSION,
    }


def fingerprint_key(fingerprint: dict) -> str:
    """A short, file-name-safe key: readable prefix plus a hash of the whole fingerprint."""
    blob = json.dumps(fingerprint, sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", fingerprint["device_name"]).strip("-").lower()[:40]
    return f"{fingerprint['device_type']}-{slug}-t{fingerprint['threads']}-{digest}"


def calibration_path(fingerprint: dict) -> Path:
    return cache_dir() / f"layer_time_{fingerprint_key(fingerprint)}.npz"
