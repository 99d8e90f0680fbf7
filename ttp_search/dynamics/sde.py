"""Linearized SGD dynamics of fine-tuning, in function space (Zancato et al., NeurIPS 2020).

Near the pretrained weights w0 the network is close to its linearization
``f(x; w) ≈ f0(x) + J(x)(w − w0)``; its training moves in function space, whose size is
(samples × outputs) whatever the parameter count. With the Gram matrix ``Θ = J Jᵀ = U Λ Uᵀ``:

* MSE (``F.mse_loss``, mean over samples and outputs), full batch: each eigen-direction k of the
  residual ``f − Y`` obeys a linear recurrence with curvature ``κ_k = 2 λ_k / (n C)``, run
  exactly step by step for any learning-rate schedule, momentum (PyTorch's heavy ball) and
  weight decay (standard decay toward 0 drifts by ``ω J w0``; decay toward w0 does not).
* Cross-entropy (``F.cross_entropy``, mean over samples): PyTorch's heavy-ball step on
  ``f = f0 + U z`` in the top eigen-directions, one discrete step at a time while any
  direction is fast (so overshoot past the edge of stability is reproduced), several at once
  once all are slow (:mod:`ttp_search.dynamics.cross_entropy`).
* SGD noise, batches smaller than the samples (either loss): simulated (by default;
  ``noise="gaussian"`` gives MSE the closed form of the next item instead).
  ``simulated_runs`` seeded runs of minibatch SGD on the function-space outputs
  (shuffling-loader batches; a step gathers the batch's rows of Θ), whose mean is the curve
  and whose 10th/90th percentiles are the band (:mod:`ttp_search.dynamics.simulation`). On
  pretrained ResNets one minibatch step can throw the outputs far and raise the loss
  several-fold, which a small-noise model misses.
* SGD noise, MSE with batches of at least the samples but fewer than the data set (the
  spectrum extrapolated to N), or any batch with ``noise="gaussian"``: an
  Ornstein–Uhlenbeck variance per direction, fed by the minibatch gradient covariance
  approximated as loss × Θ²/n (the paper's approximation) scaled by (1/B − 1/N); it raises
  the expected loss and gives the interval.

Computed on ``num_samples`` samples: the per-sample normalisation makes the top per-direction
rates ``λ/n`` estimates of the full data set's; where the residual's energy sits still moves
with n, and ``extrapolate=True`` (default) carries the spectrum from n to N
(:mod:`ttp_search.dynamics.spectrum`), so predictions are for the full training loss.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax
from torch import nn

from ttp_search._checks import check_int, check_real
from ttp_search.dynamics.cross_entropy import ce_run, direction_curvatures
from ttp_search.dynamics.estimate import check_target_loss
from ttp_search.dynamics.hyperparameters import (
    Schedule,
    check_hyperparameters,
    schedule_factors,
)
from ttp_search.dynamics.jacobian import sketched_gram, weight_direction
from ttp_search.dynamics.linearity import DEFAULT_TOLERANCE, FrozenNetwork, LinearityCheck
from ttp_search.dynamics.recursion import mse_run
from ttp_search.dynamics.samples import Loss, Noise, check_noise, sample_indices, sample_outputs
from ttp_search.dynamics.searches import StepSearches
from ttp_search.dynamics.simulation import run_losses, simulate_sgd
from ttp_search.dynamics.spectrum import extrapolation_factors
from ttp_search.errors import InvalidInputError

_Z = 1.2815515655446004  # 80% two-sided normal quantile


class LinearizedSDE(StepSearches):
    """Predict SGD fine-tuning curves and steps to a target loss without training.

    Args:
        model: the pretrained network (evaluated in eval mode; not modified). What is
            predicted is fine-tuning with BatchNorm frozen (eval mode, as the linearization
            is taken); fine-tuning in train mode renormalises every batch and trains on
            another path, which the prediction does not follow (BENCHMARKS.md, bench-fidelity).
        inputs, targets: the fine-tuning training set. ``loss="ce"``: integer class labels;
            ``loss="mse"``: targets shaped like the model's outputs.
        num_samples: samples used for the Jacobian (a seeded random subset when fewer;
            ``sample_indices`` says which, in the SDE's order).
        projection_dim: coordinates kept per parameter tensor (CountSketch above that).
        rank: eigen-directions kept for cross-entropy's full-batch run (default: all with a
            non-negligible eigenvalue; truncating them slows the predicted fit, measurably on
            ResNet-20 at 1,024 of 5,000).
        extrapolate: when ``num_samples`` is smaller than the data set, carry the spectrum
            from the subset to the full data set (:mod:`ttp_search.dynamics.spectrum`); the
            subset's own eigenvalues stay in ``sample_eigenvalues``. ``extrapolated_to`` says
            whether it happened (N) or not (None).
        noise: how batches smaller than the samples are predicted: ``"simulated"``
            (seeded SGD runs on the linearized network) or, for MSE, ``"gaussian"`` (a
            closed form, for searches that price many configurations and can trade exactness
            for milliseconds; see :data:`~ttp_search.dynamics.samples.Noise`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> sde = LinearizedSDE(net, x, y, loss="ce", num_samples=64)
        >>> curve = sde.predict_curve(lr=0.1, batch_size=16, steps=200)
        >>> list(curve.columns)
        ['step', 'loss', 'loss_low', 'loss_high', 'accuracy']
    """

    #: Relative width of the curvature bins the MSE recursion runs on (0: one per direction,
    #: exact; 0.1 moves steps to a target by under 2% and runs about 2x faster).
    bin_width: float = 0.1
    #: Seeded minibatch runs a simulated prediction makes (their mean is the curve, their
    #: 10th and 90th percentiles the band).
    simulated_runs: int = 8

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        loss: Loss = "ce",
        num_samples: int = 512,
        projection_dim: int = 2000,
        seed: int = 0,
        rank: int | None = None,
        extrapolate: bool = True,
        noise: Noise = "simulated",
    ) -> None:
        self.noise = check_noise(noise, loss)
        projection_dim = check_int("projection_dim", projection_dim, 1)
        rank = None if rank is None else check_int("rank", rank, 1)
        x, f0, self.Y, self.N = sample_outputs(
            model, inputs, targets, loss=loss, num_samples=num_samples, seed=seed
        )
        self.loss = loss
        self.n, self.C = f0.shape
        self.sample_indices = sample_indices(self.N, num_samples, seed).numpy()
        self._network = FrozenNetwork(model, x)
        was_training = model.training
        model.eval()
        try:
            gram = sketched_gram(model, x, projection_dim=projection_dim, seed=seed)
            d0 = weight_direction(model, x).reshape(self.n, self.C)
        finally:
            model.train(was_training)
        self._set_gram(gram, f0, d0.numpy(), rank, extrapolate, seed)

    def _set_gram(
        self, gram, f0: np.ndarray, d0: np.ndarray, rank: int, extrapolate: bool, seed: int = 0
    ) -> None:
        gram = torch.as_tensor(gram)
        # Decomposed in the precision the Jacobian was computed in: for a float32 network
        # that is 2-3x faster than float64 at n·C in the thousands, and its eigenvalues agree
        # to about 1e-6 of the largest, far inside the sketch's own error.
        single = gram.dtype in (torch.float32, torch.float16, torch.bfloat16)
        lam, U = torch.linalg.eigh(gram.to(torch.float32 if single else torch.float64))
        gram = gram.to(torch.float64).numpy()
        order = torch.argsort(lam, descending=True)
        self.sample_eigenvalues = lam[order].clamp_min(0).double().numpy()
        self.U = U[:, order].double().numpy()
        self.f0 = np.asarray(f0, dtype=np.float64)
        self.d0 = np.asarray(d0, dtype=np.float64)
        # The residual f0 − Y and the weight direction J w0 in the eigenbasis: every
        # prediction starts from them.
        self._residual0 = self.U.T @ (self.f0 - self.Y).ravel()
        self._drift = self.U.T @ self.d0.ravel()
        self.eigenvalues = self.sample_eigenvalues
        self.extrapolated_to = None
        if extrapolate and self.n < self.N:
            if self.N > 4 * self.n:
                warnings.warn(
                    f"extrapolating the spectrum from {self.n} to {self.N} samples (more than "
                    "two doublings) is unreliable: bench-steps measured 2.3x the full linear "
                    "model's steps from n = N/10; use num_samples >= N/4",
                    stacklevel=3,
                )
            residual = self.f0 - self.Y if self.loss == "mse" else softmax(self.f0, axis=1) - self.Y
            factors = extrapolation_factors(
                gram, self.U, residual.ravel(), self.C, self.N, seed=seed
            )
            self.eigenvalues = self.sample_eigenvalues * factors
            self.extrapolated_to = self.N
        top = self.eigenvalues[0] if self.eigenvalues.size else 0.0
        kept = int((self.eigenvalues > 1e-12 * top).sum())
        self.rank = kept if rank is None else min(rank, kept)
        self._theta = None  # the function-space Gram minibatch simulations gather rows of

    @classmethod
    def from_gram(
        cls,
        gram: np.ndarray,
        f0: np.ndarray,
        d0: np.ndarray,
        targets: np.ndarray,
        *,
        loss: Loss,
        num_data: int,
        rank: int | None = None,
        extrapolate: bool = True,
        noise: Noise = "simulated",
    ) -> LinearizedSDE:
        """An SDE from a precomputed function-space Gram ``J Jᵀ`` (``(n·C, n·C)``), the
        outputs ``f0`` (``(n, C)``) and ``d0 = J w0`` at the pretrained weights, the encoded
        targets (one-hot rows for CE, values for MSE) and the full data set's size.

        Grams add over parameter groups, so :class:`BlockGrams` builds the SDE of any set of
        trainable blocks from one Jacobian pass per block.
        """
        if loss not in ("ce", "mse"):
            raise InvalidInputError(f"loss must be 'ce' or 'mse', got {loss!r}")
        self = cls.__new__(cls)
        self.noise = check_noise(noise, loss)
        self.loss, self.N = loss, int(num_data)
        self.n, self.C = np.asarray(f0).shape
        if np.asarray(gram).shape != (self.n * self.C, self.n * self.C):
            raise InvalidInputError(
                f"gram must be ({self.n * self.C}, {self.n * self.C}), got {np.shape(gram)}"
            )
        for name, array in (("gram", gram), ("f0", f0), ("d0", d0), ("targets", targets)):
            if not np.all(np.isfinite(np.asarray(array, dtype=np.float64))):
                raise InvalidInputError(f"{name} holds non-finite values (NaN or inf)")
        self.Y = np.asarray(targets)
        self.sample_indices = np.arange(self.n)  # the Gram's own samples
        self._network = None  # no model: check_linearity is unavailable
        self._set_gram(gram, f0, d0, rank, extrapolate)
        return self

    # ------------------------------------------------------------------ predictions

    def _check(self, lr, batch_size, momentum, weight_decay, steps, decay) -> None:
        check_hyperparameters(lr, batch_size, momentum, weight_decay, steps, decay)
        if batch_size > self.N:
            raise InvalidInputError(
                f"batch_size {batch_size} is larger than the data set ({self.N} samples)"
            )

    def predict_curve(
        self,
        lr: float,
        batch_size: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        steps: int = 1000,
        schedule: Schedule = "constant",
        *,
        decay: str = "standard",
        points: int = 200,
    ) -> pd.DataFrame:
        """Predicted training loss (mean, 80% band) and accuracy at up to ``points`` steps.

        ``decay="standard"`` is PyTorch's ``weight_decay`` (toward 0); ``"to_init"`` decays
        toward the pretrained weights. The DataFrame's ``attrs["weight_decay"]`` says which.
        """
        self._check(lr, batch_size, momentum, weight_decay, steps, decay)
        eta = lr * schedule_factors(schedule, steps)
        grid = np.unique(np.linspace(0, steps, min(points, steps + 1)).round().astype(int))
        return self._curve(eta, batch_size, momentum, weight_decay, decay, grid)

    def _curve(
        self, eta, batch_size, momentum, weight_decay, decay, grid, stop=None
    ) -> pd.DataFrame:
        """The predicted curve at the steps of ``grid`` (sorted, within ``len(eta)``).
        ``stop``: simulated minibatch and cross-entropy runs stop at the first grid point
        whose band lies at or below ``stop["stop_below"]`` or whose accuracy reaches
        ``stop["stop_at_accuracy"]`` (later rows are NaN): a search for the crossing needs
        nothing after."""
        if self._simulates(batch_size):
            df = self._simulated(eta, batch_size, momentum, weight_decay, decay, grid, stop)
        elif self.loss == "mse":
            df = self._mse(eta, batch_size, momentum, weight_decay, decay, grid)
        else:
            df = self._ce(eta, momentum, weight_decay, decay, grid, stop)
        df.attrs["weight_decay"] = decay
        return df

    def _simulates(self, batch_size: int) -> bool:
        """Whether minibatches of this size are simulated (else the closed-form noise model)."""
        return batch_size < self.n and self.noise == "simulated"

    def _noise(self, batch_size: int) -> float:
        return max(1.0 / batch_size - 1.0 / self.N, 0.0)

    def _curvature_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directions grouped by curvature: (bin of each direction, bin curvature, count).

        Directions of (nearly) equal curvature evolve alike, so the MSE recursion runs once
        per bin of relative width ``bin_width`` instead of once per direction: the loss is a
        sum of per-direction energies, each bin's energy follows from the unit responses and
        three sums over its directions, and the bin's curvature is its directions' mean (which
        keeps the noise's trace). The error is second order in the width (tests check it).
        """
        cached = getattr(self, "_bins", None)
        if cached is None or cached[0] is not self.eigenvalues or cached[1] != self.bin_width:
            kappa = 2.0 * self.eigenvalues / (self.n * self.C)
            if self.bin_width > 0:
                top = float(kappa.max()) if kappa.size else 0.0
                # Curvatures below 1e-12 of the top never move in any run: one bin for them.
                floor = max(top * 1e-12, 1e-300)
                labels = np.floor(np.log(np.maximum(kappa, floor)) / math.log1p(self.bin_width))
                _, which = np.unique(labels, return_inverse=True)
            else:
                which = np.arange(kappa.size)
            count = np.bincount(which).astype(np.float64)
            mean = np.bincount(which, weights=kappa) / count
            cached = (self.eigenvalues, self.bin_width, which, mean, count)
            self._bins = cached
        return cached[2:]

    def _mse(self, eta, batch_size, momentum, wd, decay, grid) -> pd.DataFrame:
        mean, low, high = self._mse_run(eta, grid, batch_size, momentum, wd, decay)
        # MSE targets need not be classes: no accuracy.
        return _curve_frame(grid, mean, low, high, np.full(len(mean), np.nan))

    def _mse_run(self, eta, read, batch_size, momentum, wd, decay) -> tuple[np.ndarray, ...]:
        """The MSE recursion (:func:`~ttp_search.dynamics.recursion.mse_run`) for the schedule
        ``eta``, read at the sorted steps ``read``: (mean, band's low edge, high edge)."""
        _, kappa, count = self._curvature_bins()
        out = mse_run(
            np.ascontiguousarray(eta, dtype=np.float64),
            np.asarray(read, dtype=np.int64),
            kappa,
            count,
            *self._bin_sums(decay),
            float(self._noise(batch_size) * self.n),
            float(momentum),
            float(wd),
            float(self.n * self.C),
        )
        mean, sd = out[:, 0], out[:, 1]
        return mean, np.maximum(mean - _Z * sd, 0.0), mean + _Z * sd

    def _bin_sums(self, decay: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per curvature bin: Σa0², Σa0·p and Σp² over its directions (a0 the initial
        residual, p = drift − a0; standard decay drifts by J w0, decay to w0 does not)."""
        which, kappa, _ = self._curvature_bins()
        cached = getattr(self, "_sums", None)
        if cached is None or cached[0] is not which:
            cached = self._sums = (which, {})
        if decay not in cached[1]:
            a0 = self._residual0
            p = (self._drift if decay == "standard" else 0.0) - a0
            cached[1][decay] = tuple(
                np.bincount(which, weights=w, minlength=kappa.size)
                for w in (a0 * a0, a0 * p, p * p)
            )
        return cached[1][decay]

    def _ce(self, eta, momentum, wd, decay, grid, stop=None) -> pd.DataFrame:
        """Full batch: the exact discrete run in the top eigen-directions."""
        r = self.rank
        loss, acc = ce_run(
            np.asarray(eta, dtype=np.float64),
            np.asarray(grid, dtype=np.int64),
            self.U[:, :r],
            self.eigenvalues[:r],
            self.f0,
            self.Y,
            self._drift[:r] if decay == "standard" else np.zeros(r),
            momentum=float(momentum),
            wd=float(wd),
            **(stop or {}),
        ).T
        return _curve_frame(grid, loss, loss, loss, acc)

    def _simulated(self, eta, batch_size, momentum, wd, decay, grid, stop=None) -> pd.DataFrame:
        """Minibatches smaller than the samples, either loss: ``simulated_runs`` seeded SGD
        runs in function space, whose mean, 10th and 90th percentiles are the curve and band.
        (For MSE the Ornstein–Uhlenbeck model of the noise was tried here first: on a
        pretrained CIFAR ResNet-20 it reached targets up to 2x sooner than the exact
        linearized SGD did, and reached some the exact runs never reach.)"""
        d0 = self.d0 if decay == "standard" else np.zeros_like(self.d0)
        out = simulate_sgd(
            np.asarray(eta, dtype=np.float64), np.asarray(grid, dtype=np.int64),
            self._function_gram(), self.f0, self.Y, d0, loss=self.loss,
            batch_size=int(batch_size), runs=self.simulated_runs, momentum=float(momentum),
            wd=float(wd), **(stop or {}),
        )  # fmt: skip
        loss, low, high, acc = out.T
        return _curve_frame(grid, loss, low, high, acc)

    def _function_gram(self) -> np.ndarray:
        """``Θ = U diag(λ) Uᵀ`` with the (possibly extrapolated) eigenvalues, in float32:
        the rows minibatch simulations gather. Built once, on first use."""
        if self._theta is None:
            U = self.U.astype(np.float32)
            self._theta = (U * self.eigenvalues.astype(np.float32)) @ U.T
        return self._theta

    # ------------------------------------------------------------------ steps to a target

    def check_linearity(
        self,
        steps: int,
        *,
        lr: float,
        batch_size: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule = "constant",
        decay: str = "standard",
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> LinearityCheck:
        """The network against its linearization at the weights a predicted run reaches after
        ``steps`` steps (the end of a ``steps``-step budget for a decaying schedule).

        The run is the median (by loss) of the seeded minibatch simulations; its weights are
        rebuilt with one vector-Jacobian product through the network (the Jacobian is never
        formed), and the network and its linearization are evaluated there on the SDE's
        samples. Needs the model: an SDE built by :meth:`from_gram` has none.
        """
        self._check(lr, batch_size, momentum, weight_decay, steps, decay)
        check_real("tolerance", tolerance, low=1.0)
        if self._network is None:
            raise InvalidInputError(
                "check_linearity needs the network: this SDE was built from a Gram matrix"
            )
        eta = lr * schedule_factors(schedule, steps)
        d0 = self.d0 if decay == "standard" else np.zeros_like(self.d0)
        _, end = simulate_sgd(
            eta, np.array([steps]), self._function_gram(), self.f0, self.Y, d0, loss=self.loss,
            batch_size=min(int(batch_size), self.n), momentum=float(momentum),
            wd=float(weight_decay), runs=self.simulated_runs, return_path=True,
        )  # fmt: skip
        losses = run_losses(end.outputs, self.Y, self.loss)
        run = int(np.argsort(losses)[len(losses) // 2])
        return self._network.check(
            steps,
            end.coefficients[run].reshape(self.n, self.C),
            float(end.w0_coefficient[run]),
            self.Y,
            self.loss,
            tolerance,
        )

    def replay(
        self,
        batches: np.ndarray,
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule = "constant",
        decay: str = "standard",
    ) -> pd.DataFrame:
        """The linearized network's loss at every step of one SGD run on given minibatches:
        ``batches`` is (steps, batch_size) indices into the data set the SDE was built from
        (:meth:`from_gram`: into the Gram's samples), e.g. the batches a real run drew; each
        must be among :attr:`sample_indices`. This is the prediction without its sampling
        noise, to hold against a parameter-space run on the same batches
        (:func:`ttp_search.testing.linearized_sgd`)."""
        batches = np.asarray(batches)
        if batches.ndim != 2 or batches.size == 0 or batches.dtype.kind not in "iu":
            raise InvalidInputError(
                f"batches must be (steps, batch_size) integer sample indices, got shape "
                f"{batches.shape} {batches.dtype}"
            )
        position = np.full(max(int(self.sample_indices.max()), int(batches.max())) + 1, -1)
        position[self.sample_indices] = np.arange(self.n)
        missing = np.setdiff1d(batches, self.sample_indices)
        if batches.min() < 0 or missing.size:
            raise InvalidInputError(
                f"batches use samples the SDE was not computed on (e.g. "
                f"{int(missing[0]) if missing.size else int(batches.min())}); it has "
                f"{self.n} of {self.N}: build it with num_samples >= the data set's size"
            )
        batches = position[batches]
        steps = batches.shape[0]
        self._check(lr, batches.shape[1], momentum, weight_decay, steps, decay)
        eta = lr * schedule_factors(schedule, steps)
        d0 = self.d0 if decay == "standard" else np.zeros_like(self.d0)
        out = simulate_sgd(
            eta, np.arange(steps + 1), self._function_gram(), self.f0, self.Y, d0,
            loss=self.loss, batch_size=batches.shape[1], momentum=float(momentum),
            wd=float(weight_decay), batches=batches[None],
        )  # fmt: skip
        return pd.DataFrame(
            {"step": np.arange(steps + 1), "loss": out[:, 0], "accuracy": out[:, 3]}
        )

    def surely_unreachable(
        self,
        target: float,
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule = "constant",
        decay: str = "standard",
        max_steps: int = 100_000,
    ) -> bool:
        """True when the predicted mean MSE cannot reach ``target`` within ``max_steps``, from
        a bound that costs one pass over the directions instead of a run of the recursion.

        Per direction the noise-free residual is ``a* + r (a0 − a*)`` (``a*`` the point weight
        decay holds it at, ``r = Π(1 − x_t)``); for ``x ≤ 1/2``, ``r ≥ e^{−2 Σ x}``, so the
        smallest ``|a|`` over that range of r bounds each direction's energy from below, with
        the rates taken as ``η/(1 − m)`` and directions with ``x`` above 1/4 counted as fitted.
        Noise only raises the loss. False (not sure) for cross-entropy or when the bound is
        below the target: run :meth:`steps_to_loss` then. Searches use it to skip hopeless
        proposals for the price of a few vector operations.
        """
        check_target_loss(target)
        check_hyperparameters(lr, 1, momentum, weight_decay, max_steps, decay)
        if self.loss != "mse":
            return False
        kappa = 2.0 * self.eigenvalues / (self.n * self.C) + weight_decay
        a0 = self._residual0
        p = (self._drift if decay == "standard" else 0.0) - a0
        fixed = np.zeros_like(a0)
        if weight_decay:  # directions the data does not move sit at the decay's fixed point
            fixed = -weight_decay * p / kappa
        factors = schedule_factors(schedule, max_steps)
        rate = lr / (1.0 - momentum)
        r_low = np.exp(-2.0 * rate * float(factors.sum()) * kappa)
        near = fixed + r_low * (a0 - fixed)  # |a| is linear in r: its extremes bound it
        smallest = np.where(near * a0 <= 0, 0.0, np.minimum(np.abs(near), np.abs(a0)))
        fitted = rate * float(factors.max()) * kappa > 0.25
        energy = float(np.sum(np.where(fitted, 0.0, smallest**2)))
        return energy / (self.n * self.C) > target

    def edge_ratio(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> float:
        """The sharpest direction's ``η × curvature`` over the edge of stability ``2 (1 + m)``
        of heavy-ball SGD, at the pretrained weights: above 1 the linear model is unstable
        at this learning rate (see :attr:`StepsEstimate.stable`)."""
        if self.loss == "mse":
            top = 2.0 * float(self.eigenvalues.max(initial=0.0)) / (self.n * self.C)
        else:
            top = float(self._initial_curvatures().max(initial=0.0))
        return lr * (top + weight_decay) / (2.0 * (1.0 + momentum))

    def _initial_curvatures(self) -> np.ndarray:
        """Per eigen-direction ``λ_k h_k`` of the mean cross-entropy at the pretrained outputs."""
        cached = getattr(self, "_h0", None)
        if cached is None or cached[0] is not self.eigenvalues:
            r = self.rank
            M = self.U[:, :r].reshape(self.n, self.C, r)
            h = direction_curvatures(softmax(self.f0, axis=1), M)
            cached = self._h0 = (self.eigenvalues, self.eigenvalues[:r] * np.maximum(h, 0.0))
        return cached[1]


def _curve_frame(grid, loss, low, high, accuracy) -> pd.DataFrame:
    """A predicted curve: the mean loss, its 80% band and the accuracy at the steps of grid."""
    return pd.DataFrame(
        {
            "step": np.asarray(grid, dtype=int),
            "loss": loss,
            "loss_low": low,
            "loss_high": high,
            "accuracy": accuracy,
        }
    )
