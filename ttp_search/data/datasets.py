"""Small classification data sets that need no download."""

from __future__ import annotations

import functools
import io
import zipfile
from importlib.metadata import version

import numpy as np
import torch

from ttp_search._cache import atomic_write_bytes, cache_dir
from ttp_search.errors import InvalidInputError


@functools.lru_cache(maxsize=4)
def mnist1d(num_samples: int = 5000, seed: int = 42) -> tuple[torch.Tensor, ...]:
    """MNIST-1D (Greydanus 2020), generated procedurally: ``(x_train, y_train, x_test, y_test)``.

    Inputs are ``(n, 1, 40)`` float32 sequences, labels 0–9; 80% train, 20% test. Generating
    takes seconds per process, so the arrays are kept in the cache folder
    (``TTP_SEARCH_CACHE``) under the generator's version and reused; an unreadable file is
    regenerated.
    """
    # 5 samples is the least that leaves a test split of at least one.
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 5:
        raise InvalidInputError(f"num_samples must be an integer >= 5, got {num_samples!r}")
    path = cache_dir() / f"mnist1d_{version('mnist1d')}_n{num_samples}_s{seed}.npz"
    try:
        with np.load(path) as cached:
            data = {k: cached[k] for k in _MNIST1D_KEYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        data = _generate_mnist1d(num_samples, seed)
        buffer = io.BytesIO()
        np.savez(buffer, **data)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError:  # a read-only cache only costs the next process the generation
            pass
    as_x = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return as_x(data["x"]), as_y(data["y"]), as_x(data["x_test"]), as_y(data["y_test"])


_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


def _generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset reseeds NumPy's global generator; leave callers' randomness alone.
    state = np.random.get_state()  # noqa: NPY002 - restoring the legacy global state
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    return {k: np.asarray(data[k]) for k in _MNIST1D_KEYS}


@functools.lru_cache(maxsize=2)
def digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn's 8x8 digits: ``(x_train, y_train, x_test, y_test)``, inputs ``(n, 1, 8, 8)``
    scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    if not 0 <= test_fraction < 1:
        raise InvalidInputError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(y))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]
