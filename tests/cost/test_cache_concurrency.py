"""Workers sharing one calibration cache never see a torn file (atomic writes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from ttp_search.cost import LayerTimeModel
from ttp_search.cost.cache import atomic_write_bytes

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ttp_search.cost.cache import atomic_write_bytes
    payload = sys.argv[2].encode() * 200_000  # 200 kB of one letter
    for _ in range(150):
        atomic_write_bytes(Path(sys.argv[1]), payload)
    """
)

SAVER = textwrap.dedent(
    """
    import sys
    from ttp_search.cost import LayerTimeModel
    model = LayerTimeModel.load(sys.argv[1])
    for _ in range(15):
        model.save(sys.argv[1])
    """
)


def _readers_see_whole_files(path, procs, check) -> int:
    reads = 0
    while any(p.poll() is None for p in procs):
        if path.exists():
            check(path)
            reads += 1
        time.sleep(0.001)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    return reads


def test_concurrent_atomic_writes_are_never_torn(tmp_path):
    path = tmp_path / "shared.bin"
    atomic_write_bytes(path, b"a" * 200_000)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(path), c]) for c in "xy"]

    def check(p):
        data = p.read_bytes()
        assert len(data) == 200_000 and len(set(data)) == 1  # one whole payload

    assert _readers_see_whole_files(path, procs, check) > 0
    assert not list(tmp_path.glob(".shared.bin.*.tmp"))  # no temporary file left behind


def test_two_processes_saving_one_calibration_leave_it_loadable(calibrated, tmp_path):
    path = tmp_path / "calibration.npz"
    calibrated.save(path)
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    procs = [subprocess.Popen([sys.executable, str(script), str(path)]) for _ in range(2)]
    _readers_see_whole_files(path, procs, lambda p: LayerTimeModel.load(p))
    assert LayerTimeModel.load(path).data.fingerprint == calibrated.data.fingerprint
