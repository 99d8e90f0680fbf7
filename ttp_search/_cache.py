"""The folder ttp_search keeps what is costly to remake (calibrations, generated data, Gram
matrices), and the one way it writes there: atomically, so concurrent workers never read
half a file. Depends on nothing else in the package, so any engine can use it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """``$TTP_SEARCH_CACHE`` if set, else ``~/.cache/ttp_search``."""
    env = os.environ.get("TTP_SEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ttp_search"


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
