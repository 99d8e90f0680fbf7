"""CountSketch: a random bucket and sign per coordinate, so inner products stay unbiased."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ttp_search.dynamics._sparse import csr_matrix


@dataclass(frozen=True)
class CountSketch:
    """Coordinate ``i`` of a vector of ``numel`` lands in bucket ``bucket[i]`` of ``dim``,
    with sign ``sign[i]``."""

    bucket: torch.Tensor
    sign: torch.Tensor
    dim: int

    @classmethod
    def draw(cls, numel: int, dim: int, generator: torch.Generator) -> CountSketch:
        bucket = torch.randint(0, dim, (numel,), generator=generator)
        sign = torch.randint(0, 2, (numel,), generator=generator).to(torch.float32) * 2 - 1
        return cls(bucket, sign, dim)

    def __call__(self, rows: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(rows, dim): each row of ``rows`` (rows, width) sketched, its columns being the
        coordinates ``start .. start + width`` of the vector."""
        width = rows.shape[1]
        # One non-zero per coordinate: a dense-times-sparse product does the signs and the
        # bucket sums in one pass (faster than a multiply and an index_add).
        matrix = csr_matrix(
            torch.arange(width + 1),
            self.bucket[start : start + width],
            self.sign[start : start + width].to(rows.dtype),
            (width, self.dim),
        )
        return rows @ matrix
