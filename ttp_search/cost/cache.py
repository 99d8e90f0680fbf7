"""Where calibrations live: one file per device fingerprint, written atomically.

The fingerprint is what makes timings transferable: the device (CPU model or GPU name), the
thread count and the torch version. A distributed study points every worker at one cache
directory (``TTP_SEARCH_CACHE``) so the device is calibrated once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 2


def cache_dir() -> Path:
    """``$TTP_SEARCH_CACHE`` if set, else ``~/.cache/ttp_search``."""
    env = os.environ.get("TTP_SEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ttp_search"


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
