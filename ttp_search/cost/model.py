"""The layer-time model: seconds per training step from a model's ops (Justus et al. 2018).

Prediction = Σ_ops a·kernel(op) + b·(ops) + c·(alias ops) + d·update(optimizer) + e, where

* ``kernel(op)`` = roofline(op) · exp(g(op)): a roofline base (FLOPs at measured peak plus
  bytes at measured bandwidth) times a gradient-boosted correction ``g`` fitted on the
  log-ratio of measured to roofline time of calibration ops. The roofline keeps
  extrapolation to larger ops sane; ``g`` learns each op kind's real efficiency.
* ``update`` is a per-optimizer linear model in tensor count and parameter count.
* ``a…e`` are non-negative and fitted on whole steps of random calibration networks,
  minimising relative error: they absorb per-op dispatch/autograd overhead.

The interval comes from leave-one-out residuals of that last fit (10th/90th percentiles).
"""

from __future__ import annotations

import logging
import math
import pickle
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from scipy.optimize import nnls
from sklearn.ensemble import HistGradientBoostingRegressor
from torch import nn

from ttp_search._checks import check_real
from ttp_search.cost.cache import atomic_write_bytes, calibration_path, device_fingerprint
from ttp_search.cost.calibrate import (
    MIN_UPDATE_TIMINGS,
    CalibrationData,
    NetArrays,
    collect_calibration,
)
from ttp_search.cost.drift import DriftCheck, check_drift, reference_speeds
from ttp_search.cost.features import FEATURE_COLUMNS, kernel_families
from ttp_search.cost.step import check_optimizer, device_name
from ttp_search.cost.trace import StepTrace, trace_training_step
from ttp_search.errors import CalibrationError, CalibrationNotFoundError


def _fit_key(data: CalibrationData) -> str:
    """What a cached fit depends on: the calibration's samples and the fitting code."""
    import sklearn

    digest = data.digest()
    return f"{digest}:{sklearn.__version__}:{np.__version__}:{_FIT_VERSION}"


def _check_fittable(data: CalibrationData) -> None:
    """Refuse calibration samples no measurement produces, naming what is wrong."""
    problems = []
    if not (math.isfinite(data.peak_flops) and data.peak_flops > 0):
        problems.append(f"peak_flops {data.peak_flops!r}")
    if not (math.isfinite(data.bandwidth) and data.bandwidth > 0):
        problems.append(f"bandwidth {data.bandwidth!r}")
    if len(data.op_time) < 2 * _MIN_OP_COUNT:
        problems.append(f"{len(data.op_time)} op timings")
    times = (data.op_time, data.net_time, data.opt_time)
    if any(len(t) and not np.all(np.isfinite(t) & (np.asarray(t) > 0)) for t in times):
        problems.append("timings that are not positive finite seconds")
    if np.asarray(data.op_X).size and not np.all(np.isfinite(np.asarray(data.op_X))):
        problems.append("non-finite op features")
    if len(data.nets) != len(data.net_time) or len(data.nets) != len(data.net_optimizer):
        problems.append("networks and their timings differ in number")
    if not data.nets:
        problems.append("no network timings")
    if not data.opt_time:
        problems.append("no optimizer timings")
    if problems:
        raise CalibrationError(
            f"the calibration holds {', '.join(problems)}: it cannot be fitted; recalibrate "
            "with `ttp time calibrate --force`"
        )


# Bump when the fitting code changes, so fits cached by an older version are not reused.
_FIT_VERSION = 3
#: Seconds a first-use calibration takes by default (longer budgets fit better).
DEFAULT_CALIBRATION_S = 120.0
_logger = logging.getLogger("ttp_search")
_MIN_OP_COUNT = 3
_MAX_CATEGORIES = 250
_IDX = {name: i for i, name in enumerate(FEATURE_COLUMNS)}
STEP_TERMS = ("kernels", "per_op", "per_alias", "optimizer", "constant")


class UnsupportedOpWarning(UserWarning):
    """Some ops were never seen in calibration and were priced by the generic fallback."""


def roofline_seconds(X: np.ndarray, peak_flops: float, bandwidth: float) -> np.ndarray:
    """FLOPs at peak plus bytes at bandwidth, from feature rows (log1p-encoded)."""
    flops = np.expm1(X[:, _IDX["log_flops"]])
    nbytes = np.expm1(X[:, _IDX["log_bytes_in"]]) + np.expm1(X[:, _IDX["log_bytes_out"]])
    return flops / peak_flops + nbytes / bandwidth + 1e-7


def _relative_nnls(
    A: np.ndarray, y: np.ndarray, prior: dict[int, float] | None = None, strength: float = 0.0
) -> np.ndarray:
    """Non-negative least squares on relative error: min Σ((A·c − y)/y)².

    ``prior`` pulls chosen coefficients toward given values with ``strength`` pseudo-
    observations' weight: with few samples they stay near the prior, with many the data win.
    """
    M, b = A / y[:, None], np.ones_like(y)
    if prior and strength > 0:
        rows = np.zeros((len(prior), A.shape[1]))
        for r, j in enumerate(prior):
            rows[r, j] = strength
        M = np.vstack([M, rows])
        b = np.concatenate([b, [strength * v for v in prior.values()]])
    coef, _ = nnls(M, b)
    return coef


# Kernels and the optimizer update are measured directly: with few calibration networks,
# their multipliers stay near 1 rather than being traded against the overhead terms.
_STEP_PRIOR = {0: 1.0, 3: 1.0}
_STEP_PRIOR_STRENGTH = 2.0
_BY_WORK = ("sgd", "momentum", "adam", "adamw")  # optimizer updates, lightest first


@dataclass
class StepTimePrediction:
    """A predicted step time with its 80% interval, breakdown and the inputs it came from."""

    step_time_s: float
    low_s: float
    high_s: float
    breakdown: pd.DataFrame
    unsupported: list[str]
    flops: float
    bytes: float
    n_ops: int
    n_params: int
    optimizer: str
    batch_size: int
    input_shape: tuple[int, ...]
    device: str
    threads: int
    latency_s: float = 0.0
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (the breakdown as a list of per-layer rows)."""
        out = {k: v for k, v in asdict(self).items() if k != "breakdown"}
        out["input_shape"] = list(self.input_shape)
        out["breakdown"] = self.breakdown.to_dict(orient="records")
        return out


class LayerTimeModel:
    """Predicts the seconds of one training step of a PyTorch model on a calibrated device.

    Example:
        >>> import torchvision
        >>> from ttp_search.cost import LayerTimeModel
        >>> ltm = LayerTimeModel.load_or_calibrate(budget_s=60)  # doctest: +SKIP
        >>> pred = ltm.predict(torchvision.models.resnet18(num_classes=10), (3, 32, 32), 64,
        ...                    optimizer="adam")  # doctest: +SKIP
        >>> pred.step_time_s, pred.low_s, pred.high_s  # doctest: +SKIP
    """

    def __init__(self, random_state: int = 0):
        self.random_state = random_state
        self.data: CalibrationData | None = None
        self.path: Path | None = None
        # Set by load_or_calibrate: whether this process ran the calibration.
        self.calibrated_here: bool | None = None
        # Predicted seconds are multiplied by this: the device's slowdown since calibration
        # when a drift check applied one (check_drift), else 1.
        self.slowdown = 1.0
        self.drift: DriftCheck | None = None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def calibrate(
        cls,
        budget_s: float = DEFAULT_CALIBRATION_S,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        progress: bool = True,
        save: bool | str | Path = True,
    ) -> LayerTimeModel:
        """Measure this device within ``budget_s`` seconds, fit, and (by default) cache it."""
        data = collect_calibration(budget_s, device=device, seed=seed, progress=progress)
        model = cls(random_state=seed).fit(data)
        if save:
            model.save(None if save is True else save)
        return model

    def fit(self, data: CalibrationData) -> LayerTimeModel:
        """Fit the op, optimizer and step models on calibration samples.

        Raises :class:`CalibrationError` when the samples cannot be fitted (too few, or
        values a calibration cannot produce), whatever the fitting library says.
        """
        _check_fittable(data)
        self.data = data
        try:
            self._fit_ops(data)
            self._fit_optimizer(data)
            self._fit_steps(data)
        except (ValueError, IndexError, np.linalg.LinAlgError) as exc:
            self.data = None
            raise CalibrationError(
                f"the calibration samples cannot be fitted ({type(exc).__name__}: {exc}); "
                "recalibrate with `ttp time calibrate --force`"
            ) from exc
        return self

    _FITTED = (
        "op_vocab",
        "seen_ops",
        "op_regressor",
        "optimizer_coef",
        "step_coef",
        "loo_residuals",
        "interval_log",
    )

    def _fit_cached(self, data: CalibrationData, path: Path) -> LayerTimeModel:
        """``fit``, reusing the fit cached next to the calibration file when it was made from
        the same samples by the same library versions (a fit takes seconds, a load
        milliseconds); a missing, stale or unreadable cache is refitted and rewritten."""
        key = _fit_key(data)
        cache = path.with_name(path.name + ".fit.pkl")
        try:
            saved = pickle.loads(cache.read_bytes())
            if saved.get("key") == key:
                for name in self._FITTED:
                    setattr(self, name, saved["fitted"][name])
                self.data = data
                return self
        except Exception:  # any damage means: refit
            pass
        self.fit(data)
        fitted = {name: getattr(self, name) for name in self._FITTED}
        try:
            atomic_write_bytes(cache, pickle.dumps({"key": key, "fitted": fitted}))
        except OSError:
            pass  # a read-only cache folder: the fit is just not reused
        return self

    def _fit_ops(self, data: CalibrationData) -> None:
        X = np.asarray(data.op_X, dtype=np.float64)
        families = kernel_families(data.op_names, X)
        counts = pd.Series(families).value_counts()
        common = [n for n in counts.index if counts[n] >= _MIN_OP_COUNT][: _MAX_CATEGORIES - 1]
        self.op_vocab = {name: i for i, name in enumerate(sorted(common))}
        self.seen_ops = set(data.op_names)
        y = np.log(np.asarray(data.op_time)) - np.log(self._roofline(X))
        self.op_regressor = HistGradientBoostingRegressor(
            max_iter=300,
            learning_rate=0.08,
            max_leaf_nodes=31,
            min_samples_leaf=4,
            l2_regularization=1.0,
            categorical_features=[0],
            early_stopping=False,
            random_state=self.random_state,
        ).fit(self._op_matrix(families, X), y)

    def _roofline(self, X: np.ndarray) -> np.ndarray:
        assert self.data is not None
        return roofline_seconds(X, self.data.peak_flops, self.data.bandwidth)

    def _op_matrix(self, families: Sequence[str], X: np.ndarray) -> np.ndarray:
        other = len(self.op_vocab)
        codes = np.array([self.op_vocab.get(f, other) for f in families], dtype=np.float64)
        return np.column_stack([codes, X]) if len(families) else np.zeros((0, X.shape[1] + 1))

    def kernel_seconds(self, names: Sequence[str], X: np.ndarray) -> np.ndarray:
        """Predicted kernel seconds of each op (no dispatch overhead)."""
        if len(names) == 0:
            return np.zeros(0)
        families = kernel_families(names, X)
        return self._roofline(X) * np.exp(self.op_regressor.predict(self._op_matrix(families, X)))

    def _fit_optimizer(self, data: CalibrationData) -> None:
        kinds = np.array(data.opt_kind)
        n = np.asarray(data.opt_n_tensors, dtype=np.float64)
        numel = np.asarray(data.opt_numel, dtype=np.float64)
        t = np.asarray(data.opt_time, dtype=np.float64)
        self.optimizer_coef: dict[str, list[float]] = {}
        for kind in sorted(set(kinds)):
            own = (kinds == kind).sum() >= MIN_UPDATE_TIMINGS
            mask = kinds == kind if own else np.ones_like(t, dtype=bool)
            A = np.column_stack([np.ones(mask.sum()), n[mask], numel[mask]])
            self.optimizer_coef[kind] = _relative_nnls(A, t[mask]).tolist()
        # Each update in _BY_WORK does all the work of the one before it and more (momentum
        # adds a buffer, Adam a second moment, AdamW a decay): timing noise on a loaded
        # machine must not price a heavier one below a lighter one.
        lighter = None
        for kind in _BY_WORK:
            if kind in self.optimizer_coef and lighter is not None:
                floor = self.optimizer_coef[lighter]
                self.optimizer_coef[kind] = np.maximum(self.optimizer_coef[kind], floor).tolist()
            lighter = kind if kind in self.optimizer_coef else lighter

    def optimizer_seconds(self, kind: str, n_tensors: int, n_params: int) -> float:
        """Predicted seconds of ``optimizer.step()`` for this many tensors and parameters."""
        kind = check_optimizer(kind)
        if n_tensors == 0:
            return 0.0
        if kind not in self.optimizer_coef:
            raise CalibrationError(
                f"optimizer {kind!r} was not calibrated on this device; recalibrate with "
                "`ttp time calibrate --force`"
            )
        c0, c_tensor, c_param = self.optimizer_coef[kind]
        return c0 + c_tensor * n_tensors + c_param * n_params

    def _step_terms(self, net: NetArrays, kind: str) -> np.ndarray:
        kernels = float(self.kernel_seconds(net.op_names, net.op_X).sum())
        update = self.optimizer_seconds(kind, net.n_param_tensors, net.n_params)
        return np.array([kernels, net.n_ops, net.n_alias, update, 1.0])

    def _fit_steps(self, data: CalibrationData) -> None:
        A = np.array(
            [self._step_terms(n, k) for n, k in zip(data.nets, data.net_optimizer, strict=True)]
        )
        y = np.asarray(data.net_time, dtype=np.float64)
        self.step_coef = _relative_nnls(A, y, _STEP_PRIOR, _STEP_PRIOR_STRENGTH)
        # Leave-one-out residuals give an honest interval for an unseen network.
        residuals = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            coef = _relative_nnls(A[keep], y[keep], _STEP_PRIOR, _STEP_PRIOR_STRENGTH)
            residuals.append(math.log(y[i] / max(float(A[i] @ coef), 1e-9)))
        residuals = np.array(residuals)
        self.loo_residuals = residuals
        self.interval_log = (
            min(float(np.quantile(residuals, 0.10)), math.log(0.97)),
            max(float(np.quantile(residuals, 0.90)), math.log(1.03)),
        )

    def cross_validate_ops(self, folds: int = 5) -> dict:
        """Held-out error of the op model on calibration op timings (K-fold, by layer sample).

        Comparable to Justus et al.'s 10.9% mean error on held-out layer configurations.
        """
        data = self._check_fitted()
        X = np.asarray(data.op_X, dtype=np.float64)
        t = np.asarray(data.op_time)
        names = np.array(data.op_names)
        fold = np.random.default_rng(self.random_state).integers(0, folds, len(t))
        pred = np.empty_like(t)
        for k in range(folds):
            part = LayerTimeModel(self.random_state)
            part.data = data
            train = CalibrationData(
                fingerprint=data.fingerprint,
                peak_flops=data.peak_flops,
                bandwidth=data.bandwidth,
                op_names=list(names[fold != k]),
                op_X=X[fold != k].tolist(),
                op_time=t[fold != k].tolist(),
            )
            part._fit_ops(train)
            pred[fold == k] = part.kernel_seconds(list(names[fold == k]), X[fold == k])
        ape = np.abs(pred - t) / t
        return {
            "median_ape": float(np.median(ape)),
            "mean_ape": float(np.mean(ape)),
            "within_10": float(np.mean(ape <= 0.10)),
            "samples": len(t),
        }

    # ------------------------------------------------------------- persistence
    def save(self, path: str | Path | None = None) -> Path:
        """Write the calibration (the samples; the fit is recomputed on load) atomically."""
        if self.data is None:
            raise CalibrationError("nothing to save: this LayerTimeModel was never calibrated")
        target = Path(path) if path is not None else calibration_path(self.data.fingerprint)
        self.path = self.data.save(target)
        return self.path

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, device: torch.device | str = "cpu"
    ) -> LayerTimeModel:
        """Load this device's calibration from the cache (or ``path``) and fit it.

        Raises :class:`CalibrationNotFoundError` when there is none, and
        :class:`CalibrationError` when the file is corrupt or made for another device.
        """
        expected = device_fingerprint(device)
        target = Path(path) if path is not None else calibration_path(expected)
        if not target.exists():
            raise CalibrationNotFoundError(
                f"no calibration for this device at {target}; run `ttp time calibrate` first"
            )
        data = CalibrationData.load(target)
        if data.fingerprint != expected:
            raise CalibrationError(
                f"calibration file {target} was made for {data.fingerprint}, but this device is "
                f"{expected}; recalibrate with `ttp time calibrate --force`"
            )
        model = cls()._fit_cached(data, target)
        model.path = target
        return model

    @classmethod
    def load_or_calibrate(
        cls,
        budget_s: float = DEFAULT_CALIBRATION_S,
        *,
        device: torch.device | str = "cpu",
        progress: bool = True,
        drift_check: bool = True,
    ) -> LayerTimeModel:
        """The cached calibration when there is one, else a fresh one (saved to the cache).

        A cached calibration is drift-checked (``drift_check``, about a second): when the
        device runs faster or slower than when it was calibrated, predictions are rescaled
        (:meth:`check_drift`; ``model.drift`` says by how much).

        A first use calibrates for about ``budget_s`` seconds, once per device, and says so
        in a log line (with the progress bar when ``progress``); ``ttp time calibrate`` does
        it ahead of time.

        Workers that start together on one machine (or share ``TTP_SEARCH_CACHE``) calibrate
        once: the first takes a lock next to the cache file and calibrates, the others wait
        for it and load its result. ``model.calibrated_here`` tells which happened.
        """
        try:
            model = cls.load(device=device)
        except CalibrationNotFoundError:
            target = calibration_path(device_fingerprint(device))
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{target}.lock"):
                try:  # another worker may have finished while this one waited
                    model = cls.load(device=device)
                except CalibrationNotFoundError:
                    _logger.warning(
                        "ttp_search: no calibration for this device (%s) yet: calibrating now "
                        "for about %.0f s, once; it is cached in %s (`ttp time calibrate` "
                        "does this ahead of time)",
                        device_fingerprint(device),
                        budget_s,
                        target.parent,
                    )
                    model = cls.calibrate(budget_s, device=device, progress=progress)
                    model.calibrated_here = True
                    return model
        model.calibrated_here = False
        if drift_check:
            model.check_drift()
        return model

    def check_drift(self, *, apply_beyond: float = 0.5, stale_ratio: float = 2.0) -> DriftCheck:
        """Re-measure the device's reference kernels (about a second) against the speeds
        recorded at calibration; when they moved by more than ``apply_beyond`` (a fraction),
        later predictions are rescaled by the slowdown, and a drift beyond ``stale_ratio``
        is logged as a stale calibration. Returns the :class:`DriftCheck`."""
        data = self._check_fitted()
        check_real("apply_beyond", apply_beyond, low=0.0)
        check_real("stale_ratio", stale_ratio, low=1.0, low_open=True)
        device = data.fingerprint.get("device_type", "cpu")
        drift = check_drift(
            data.reference_speeds(),
            reference_speeds(device),
            calibrated_at=data.created,
            stale_ratio=stale_ratio,
        )
        self.drift = drift
        # On a quiet machine one reference kernel can read 1.2-1.5x slow for a second while
        # training steps hardly move; rescaling by such readings made predictions worse more
        # often than better (bench-drift), so only a larger drift is applied.
        moved = abs(math.log(drift.slowdown)) > math.log1p(apply_beyond)
        self.slowdown = drift.slowdown if moved else 1.0
        if drift.stale:
            _logger.warning("ttp_search: %s", drift.text())
        elif moved:
            _logger.info("ttp_search: %s", drift.text())
        return drift

    # -------------------------------------------------------------- prediction
    def _check_fitted(self) -> CalibrationData:
        if self.data is None:
            raise CalibrationError(
                "LayerTimeModel is not calibrated: use LayerTimeModel.load() or .calibrate()"
            )
        return self.data

    def predict(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        batch_size: int,
        optimizer: str = "sgd",
    ) -> StepTimePrediction:
        """Predict one training step (forward, backward, ``optimizer.step()``) of ``model``.

        ``input_shape`` excludes the batch dimension, e.g. ``(3, 32, 32)``. Nothing is
        computed for real: the step is traced on fake tensors.
        """
        self._check_fitted()
        kind = check_optimizer(optimizer)
        start = time.perf_counter()
        trace = trace_training_step(model, input_shape, batch_size)
        pred = self.predict_trace(trace, kind)
        pred.latency_s = time.perf_counter() - start
        return pred

    def predict_trace(self, trace: StepTrace, optimizer: str = "sgd") -> StepTimePrediction:
        """Predict from an already traced step (lets one trace serve several optimizers)."""
        data = self._check_fitted()
        kind = check_optimizer(optimizer)
        a, b_op, c_alias, d_opt, e_const = self.step_coef
        real = [r for r in trace.ops if not r.features.is_alias]
        names = [r.features.op for r in real]
        X = np.array([r.features.vector() for r in real]).reshape(-1, len(FEATURE_COLUMNS))
        per_op = np.zeros(len(trace.ops))
        per_op_kernel = a * self.kernel_seconds(names, X) + b_op
        it = iter(per_op_kernel)
        for i, r in enumerate(trace.ops):
            per_op[i] = c_alias if r.features.is_alias else next(it)
        unsupported = sorted({n for n in names if n not in self.seen_ops})
        if unsupported:
            warnings.warn(
                f"ops never seen in calibration, priced by the generic FLOPs/bytes fallback: "
                f"{', '.join(unsupported)}",
                UnsupportedOpWarning,
                stacklevel=3,
            )
        update = d_opt * self.optimizer_seconds(kind, trace.n_param_tensors, trace.n_params)
        k = self.slowdown  # the device's drift since calibration (1 unless check_drift)
        breakdown = self._breakdown(trace, per_op * k, update * k, e_const * k)
        total = float(breakdown["time_s"].sum())
        lo, hi = self.interval_log
        fp = data.fingerprint
        return StepTimePrediction(
            step_time_s=total,
            low_s=total * math.exp(lo),
            high_s=total * math.exp(hi),
            breakdown=breakdown,
            unsupported=unsupported,
            flops=trace.flops,
            bytes=trace.bytes,
            n_ops=len(trace.ops),
            n_params=trace.n_params,
            optimizer=kind,
            batch_size=trace.batch_size,
            input_shape=trace.input_shape,
            device=device_name(trace.device),
            threads=int(fp["threads"]),
            inputs={"calibration": str(self.path) if self.path else None, "fingerprint": fp},
        )

    @staticmethod
    def _breakdown(
        trace: StepTrace, per_op: np.ndarray, update: float, const: float
    ) -> pd.DataFrame:
        frame = trace.frame()
        frame["time_s"] = per_op
        frame["forward_s"] = np.where(frame["phase"] == "forward", per_op, 0.0)
        frame["backward_s"] = np.where(frame["phase"] == "backward", per_op, 0.0)
        grouped = (
            frame.groupby(["layer", "module_type"], sort=False)
            .agg(
                n_ops=("op", "size"),
                flops=("flops", "sum"),
                bytes=("bytes", "sum"),
                forward_s=("forward_s", "sum"),
                backward_s=("backward_s", "sum"),
                time_s=("time_s", "sum"),
            )
            .reset_index()
        )
        extra = pd.DataFrame(
            [
                {
                    "layer": "(optimizer step)",
                    "module_type": trace.n_param_tensors and "optimizer",
                    "n_ops": 0,
                    "flops": 0.0,
                    "bytes": 0.0,
                    "forward_s": 0.0,
                    "backward_s": 0.0,
                    "time_s": update,
                },
                {
                    "layer": "(step overhead)",
                    "module_type": "",
                    "n_ops": 0,
                    "flops": 0.0,
                    "bytes": 0.0,
                    "forward_s": 0.0,
                    "backward_s": 0.0,
                    "time_s": const,
                },
            ]
        )
        out = pd.concat([grouped, extra], ignore_index=True)
        total = out["time_s"].sum()
        out["share"] = out["time_s"] / total if total > 0 else 0.0
        return out
