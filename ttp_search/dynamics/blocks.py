"""One Jacobian pass per parameter block, shared by every trial of a fine-tuning search.

The function-space Gram of a set of trainable parameters is the sum of its blocks' Grams
(``J = [J_1 … J_B]`` so ``J Jᵀ = Σ_b J_b J_bᵀ``), and so is ``J w0``. A search over which
blocks to fine-tune therefore needs each block's Gram once; the SDE of any choice of blocks
is a sum and an eigendecomposition (milliseconds). The per-block results are saved in the
cache folder under a key of the weights, the data sample and the settings, behind a file lock,
so the workers of a study compute them once between them.

Example:
    .. code-block:: python

        grams = BlockGrams.load_or_compute(
            model, x, y, blocks={"head": ["1."], "body": ["0."]}, loss="mse", num_samples=256
        )
        sde = grams.sde(["head"])            # only the head is fine-tuned
        est = sde.steps_to_loss(0.05, lr=0.05, batch_size=32, schedule="linear")
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from ttp_search._cache import atomic_write_bytes, cache_dir
from ttp_search.dynamics.jacobian import sketched_gram, weight_direction
from ttp_search.dynamics.samples import Loss, Noise, sample_outputs
from ttp_search.dynamics.sde import LinearizedSDE
from ttp_search.errors import InvalidInputError


class BlockGrams:
    """Per-block Grams of ``model`` on a sample of ``(inputs, targets)``.

    Args:
        blocks: block name -> parameter-name prefixes (as in ``model.named_parameters()``);
            every block must match at least one parameter.
        loss, num_samples, projection_dim, seed: as in :class:`LinearizedSDE`.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        blocks: Mapping[str, Sequence[str]],
        *,
        loss: Loss = "ce",
        num_samples: int = 512,
        projection_dim: int = 2000,
        seed: int = 0,
    ) -> None:
        names = [n for n, _ in model.named_parameters()]
        members = _members(blocks, names)
        x, self.f0, self.targets, self.num_data = sample_outputs(
            model, inputs, targets, loss=loss, num_samples=num_samples, seed=seed
        )
        self.loss = loss
        self.grams: dict[str, np.ndarray] = {}
        self.d0: dict[str, np.ndarray] = {}
        saved = {n: p.requires_grad for n, p in model.named_parameters()}
        was_training = model.training
        model.eval()
        try:
            for block, params in members.items():
                for n, p in model.named_parameters():
                    p.requires_grad_(n in params)
                gram = sketched_gram(model, x, projection_dim=projection_dim, seed=seed)
                self.grams[block] = gram.numpy()
                self.d0[block] = weight_direction(model, x).reshape(self.f0.shape).numpy()
        finally:
            for n, p in model.named_parameters():
                p.requires_grad_(saved[n])
            model.train(was_training)

    @property
    def blocks(self) -> list[str]:
        return list(self.grams)

    def sde(
        self,
        blocks: Sequence[str],
        *,
        rank: int | None = None,
        extrapolate: bool = True,
        noise: Noise = "simulated",
    ) -> LinearizedSDE:
        """The linearized SDE of fine-tuning exactly ``blocks`` (the rest frozen); see
        :class:`LinearizedSDE` for ``extrapolate`` and ``noise``."""
        if isinstance(blocks, str):
            blocks = [blocks]
        unknown = [b for b in blocks if b not in self.grams]
        if unknown or not blocks:
            raise InvalidInputError(
                f"blocks must be a non-empty subset of {self.blocks}, got {list(blocks)!r}"
            )
        gram = sum(self.grams[b] for b in blocks)
        d0 = sum(self.d0[b] for b in blocks)
        return LinearizedSDE.from_gram(
            gram,
            self.f0,
            d0,
            self.targets,
            loss=self.loss,
            num_data=self.num_data,
            rank=rank,
            extrapolate=extrapolate,
            noise=noise,
        )

    # -------------------------------------------------------------------- persistence
    def to_bytes(self) -> bytes:
        arrays = {"f0": self.f0, "targets": self.targets}
        for b in self.grams:
            arrays[f"gram/{b}"] = self.grams[b]
            arrays[f"d0/{b}"] = self.d0[b]
        meta = {"loss": self.loss, "num_data": self.num_data, "blocks": self.blocks}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> BlockGrams:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            self = cls.__new__(cls)
            self.loss, self.num_data = meta["loss"], int(meta["num_data"])
            self.f0, self.targets = z["f0"], z["targets"]
            self.grams = {b: z[f"gram/{b}"] for b in meta["blocks"]}
            self.d0 = {b: z[f"d0/{b}"] for b in meta["blocks"]}
        return self

    @classmethod
    def load_or_compute(
        cls,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        blocks: Mapping[str, Sequence[str]],
        *,
        loss: Loss = "ce",
        num_samples: int = 512,
        projection_dim: int = 2000,
        seed: int = 0,
        folder: str | Path | None = None,
    ) -> BlockGrams:
        """The cached result for these weights, data and settings, else compute and save it.

        Workers that call this together compute once: the first takes the lock, the others
        wait and load. ``self.computed_here`` tells which happened.
        """
        settings = dict(
            loss=loss, num_samples=num_samples, projection_dim=projection_dim, seed=seed
        )
        key = fingerprint(model, inputs, targets, blocks, **settings)
        path = Path(folder) if folder is not None else cache_dir()
        path = path / f"block_grams_{key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if path.exists():
                try:
                    grams = cls.from_bytes(path.read_bytes())
                    grams.computed_here, grams.path = False, path
                    return grams
                except (OSError, ValueError, KeyError):
                    pass  # corrupt: recompute and overwrite
            grams = cls(model, inputs, targets, blocks, **settings)
            atomic_write_bytes(path, grams.to_bytes())
        grams.computed_here, grams.path = True, path
        return grams


def _members(blocks: Mapping[str, Sequence[str]], names: list[str]) -> dict[str, set[str]]:
    if not isinstance(blocks, Mapping) or not blocks:
        raise InvalidInputError(f"blocks must be a non-empty mapping, got {blocks!r}")
    members = {}
    for block, prefixes in blocks.items():
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        chosen = {n for n in names if any(n.startswith(p) for p in prefixes)}
        if not chosen:
            raise InvalidInputError(
                f"block {block!r} ({list(prefixes)}) matches no parameter of the model"
            )
        members[block] = chosen
    return members


def fingerprint(model, inputs, targets, blocks, **settings) -> str:
    """A short hash of the weights, the data, the blocks and the settings."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for t in (inputs, targets):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    blocks = {k: [v] if isinstance(v, str) else list(v) for k, v in blocks.items()}
    h.update(json.dumps([blocks, settings], sort_keys=True).encode())
    return h.hexdigest()[:16]
