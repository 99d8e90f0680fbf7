"""A torch CSR matrix, built without torch's one-time beta note and invariant checks."""

from __future__ import annotations

import warnings

import torch


def csr_matrix(
    row_starts: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, size: tuple
) -> torch.Tensor:
    """``torch.sparse_csr_tensor`` for indices built correctly by construction: the
    invariant checks are skipped, and torch's note that sparse CSR is in beta silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            row_starts, columns, values, size=size, check_invariants=False
        )
