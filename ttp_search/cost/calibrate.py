"""Time random layers, random networks and optimizer updates on this device.

Three kinds of samples, all within one time budget:

1. **ops**: every aten op of a random layer's forward and backward, timed on its own
   (warm-up, then the median of repeated blocks) — what each kernel costs;
2. **optimizer updates**: ``optimizer.step()`` on random parameter sets, per optimizer kind —
   the update's cost by tensor count and parameter count;
3. **networks**: whole training steps of small random networks — what the sum of kernels
   misses (dispatch and autograd overhead per op, cache effects).

Nothing here times a model a user will ask about: calibration and evaluation stay disjoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm.auto import tqdm

from ttp_search._checks import check_real
from ttp_search.cost._timing import median_time, synchronize
from ttp_search.cost.cache import FORMAT_VERSION, atomic_write_bytes, device_fingerprint
from ttp_search.cost.drift import reference_speeds
from ttp_search.cost.features import FEATURE_COLUMNS, is_alias_op, op_features
from ttp_search.cost.random_nets import LAYER_KINDS, random_layer, random_network
from ttp_search.cost.step import OPTIMIZERS, build_optimizer, measure_step_time, training_loss
from ttp_search.cost.trace import StepTrace, trace_training_step
from ttp_search.errors import CalibrationError, InvalidInputError

#: Shares of the budget spent on each kind of sample.
_SHARES = {"peaks": 0.03, "ops": 0.62, "optimizer": 0.08, "networks": 0.27}
#: Samples each stage needs for the fit, and how long past its share it may run to get them.
# The fit gives each optimizer its own update model only from 3 timings of it, and pools
# them all below that (every optimizer then costs the same: Adam priced like SGD). Kinds are
# sampled in turn, so a loaded machine still gets 3 of each within the grace period.
MIN_UPDATE_TIMINGS = 3
_MIN_SAMPLES = {"ops": 20, "optimizer": MIN_UPDATE_TIMINGS * len(OPTIMIZERS), "networks": 3}
_GRACE_S = 30.0
# Ops seen this often are re-timed only now and then: budget goes to rarer, costlier ones.
_COMMON_OP = 150
_COMMON_OP_KEEP = 0.2
# Outputs this large page-fault on first touch: warm them up more before timing.
_LARGE_OUTPUT_BYTES = 32 * 2**20
_MAX_ACTIVATIONS = 6_000_000
_MAX_PARAMS = 120_000_000

NET_INFO_COLUMNS = ("n_ops", "n_alias", "flops", "bytes", "n_params", "n_param_tensors", "time_s")


@dataclass
class NetArrays:
    """A traced network in array form: op names and features of its non-alias ops."""

    op_names: list[str]
    op_X: np.ndarray
    n_ops: int
    n_alias: int
    flops: float
    bytes: float
    n_params: int
    n_param_tensors: int

    @classmethod
    def from_trace(cls, trace: StepTrace) -> NetArrays:
        real = [r.features for r in trace.ops if not r.features.is_alias]
        return cls(
            op_names=[f.op for f in real],
            op_X=np.array([f.vector() for f in real], dtype=np.float64).reshape(
                -1, len(FEATURE_COLUMNS)
            ),
            n_ops=len(real),
            n_alias=len(trace.ops) - len(real),
            flops=trace.flops,
            bytes=trace.bytes,
            n_params=trace.n_params,
            n_param_tensors=trace.n_param_tensors,
        )


@dataclass
class CalibrationData:
    """Everything measured during one calibration; the fitted model is a function of this."""

    fingerprint: dict
    peak_flops: float
    bandwidth: float
    op_names: list[str] = field(default_factory=list)
    op_X: list[list[float]] = field(default_factory=list)
    op_time: list[float] = field(default_factory=list)
    nets: list[NetArrays] = field(default_factory=list)
    net_optimizer: list[str] = field(default_factory=list)
    net_time: list[float] = field(default_factory=list)
    opt_kind: list[str] = field(default_factory=list)
    opt_n_tensors: list[int] = field(default_factory=list)
    opt_numel: list[float] = field(default_factory=list)
    opt_time: list[float] = field(default_factory=list)
    budget_s: float = 0.0
    elapsed_s: float = 0.0
    created: str = ""
    #: Seconds of one tiny op at calibration (NaN in files made before it was recorded).
    dispatch_s: float = math.nan

    def reference_speeds(self) -> dict[str, float]:
        """How fast the device was when calibrated (see :mod:`ttp_search.cost.drift`)."""
        return {
            "peak_flops": self.peak_flops,
            "bandwidth": self.bandwidth,
            "dispatch_s": self.dispatch_s,
        }

    def summary(self) -> dict:
        return {
            "op_samples": len(self.op_time),
            "distinct_ops": len(set(self.op_names)),
            "network_samples": len(self.net_time),
            "optimizer_samples": len(self.opt_time),
            "peak_gflops": self.peak_flops / 1e9,
            "bandwidth_gbs": self.bandwidth / 1e9,
            "elapsed_s": self.elapsed_s,
        }

    # --- persistence: plain arrays in an .npz, no pickle, so any numpy can read it back ---
    def _arrays(self) -> dict[str, np.ndarray]:
        offsets = np.cumsum([0] + [len(n.op_names) for n in self.nets])
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "peak_flops": self.peak_flops,
            "bandwidth": self.bandwidth,
            "budget_s": self.budget_s,
            "elapsed_s": self.elapsed_s,
            "created": self.created,
            "dispatch_s": None if math.isnan(self.dispatch_s) else self.dispatch_s,
            "feature_columns": list(FEATURE_COLUMNS),
        }
        width = len(FEATURE_COLUMNS)
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "op_names": np.array(self.op_names, dtype=str),
            "op_X": np.array(self.op_X, dtype=np.float64).reshape(-1, width),
            "op_time": np.array(self.op_time, dtype=np.float64),
            "net_offsets": offsets.astype(np.int64),
            "net_op_names": np.array([n for net in self.nets for n in net.op_names], dtype=str),
            "net_op_X": np.concatenate([net.op_X for net in self.nets]).reshape(-1, width)
            if self.nets
            else np.zeros((0, width)),
            "net_info": np.array(
                [
                    [n.n_ops, n.n_alias, n.flops, n.bytes, n.n_params, n.n_param_tensors, t]
                    for n, t in zip(self.nets, self.net_time, strict=True)
                ],
                dtype=np.float64,
            ).reshape(-1, len(NET_INFO_COLUMNS)),
            "net_optimizer": np.array(self.net_optimizer, dtype=str),
            "opt_kind": np.array(self.opt_kind, dtype=str),
            "opt_n_tensors": np.array(self.opt_n_tensors, dtype=np.int64),
            "opt_numel": np.array(self.opt_numel, dtype=np.float64),
            "opt_time": np.array(self.opt_time, dtype=np.float64),
        }
        return arrays

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, **self._arrays())
        return buf.getvalue()

    def digest(self) -> str:
        """A hash of the samples themselves: two saves of one calibration agree on it even
        though their files differ (the zip format stamps each save with its time)."""
        h = hashlib.sha256()
        for name, array in self._arrays().items():
            h.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationData:
        """Read a calibration file; any damage raises :class:`CalibrationError` naming the file."""
        path = Path(path)
        hint = f"recalibrate with `ttp time calibrate --force` (or delete {path})"
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise CalibrationError(f"calibration file {path} is corrupt ({exc}); {hint}") from exc
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            found = meta.get("format_version") if isinstance(meta, dict) else None
            raise CalibrationError(
                f"calibration file {path} has format version {found!r}, this ttp_search "
                f"reads version {FORMAT_VERSION}; {hint}"
            )
        if meta.get("feature_columns") != list(FEATURE_COLUMNS):
            raise CalibrationError(f"calibration file {path} was made with other features; {hint}")
        try:
            offsets = arrays["net_offsets"]
            nets = []
            for i, info in enumerate(arrays["net_info"]):
                lo, hi = int(offsets[i]), int(offsets[i + 1])
                nets.append(
                    NetArrays(
                        op_names=[str(s) for s in arrays["net_op_names"][lo:hi]],
                        op_X=arrays["net_op_X"][lo:hi],
                        n_ops=int(info[0]),
                        n_alias=int(info[1]),
                        flops=float(info[2]),
                        bytes=float(info[3]),
                        n_params=int(info[4]),
                        n_param_tensors=int(info[5]),
                    )
                )
            data = cls(
                fingerprint=meta["fingerprint"],
                peak_flops=float(meta["peak_flops"]),
                bandwidth=float(meta["bandwidth"]),
                op_names=[str(s) for s in arrays["op_names"]],
                op_X=arrays["op_X"].tolist(),
                op_time=arrays["op_time"].tolist(),
                nets=nets,
                net_optimizer=[str(s) for s in arrays["net_optimizer"]],
                net_time=arrays["net_info"][:, -1].tolist(),
                opt_kind=[str(s) for s in arrays["opt_kind"]],
                opt_n_tensors=arrays["opt_n_tensors"].tolist(),
                opt_numel=arrays["opt_numel"].tolist(),
                opt_time=arrays["opt_time"].tolist(),
                budget_s=float(meta["budget_s"]),
                elapsed_s=float(meta["elapsed_s"]),
                created=str(meta["created"]),
                dispatch_s=float(meta.get("dispatch_s") or math.nan),
            )
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise CalibrationError(
                f"calibration file {path} is incomplete ({exc}); {hint}"
            ) from exc
        if not np.all(np.isfinite(data.op_time)) or len(data.op_time) != len(data.op_names):
            raise CalibrationError(f"calibration file {path} holds invalid timings; {hint}")
        return data


class _OpTimer(TorchDispatchMode):
    """Runs each op once for the forward/backward to proceed, then times it on its own."""

    def __init__(
        self,
        data: CalibrationData,
        deadline: float,
        device: torch.device,
        rng: np.random.Generator | None = None,
    ):
        super().__init__()
        self.data = data
        self.deadline = deadline
        self.device = device
        self.rng = rng or np.random.default_rng(0)
        self.counts: dict[str, int] = {}
        for name in data.op_names:
            self.counts[name] = self.counts.get(name, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if is_alias_op(func) or time.perf_counter() > self.deadline:
            return out
        feats = op_features(func, args, kwargs, out)
        if self.counts.get(feats.op, 0) > _COMMON_OP and self.rng.random() > _COMMON_OP_KEEP:
            return out
        timing = median_time(
            lambda: func(*args, **kwargs),
            warmup=3 if feats.bytes_out > _LARGE_OUTPUT_BYTES else 1,
            repeats=5,
            min_block_s=1e-3,
            max_total_s=1.0,
            min_repeats=3,
            device=self.device,
        )
        self.counts[feats.op] = self.counts.get(feats.op, 0) + 1
        self.data.op_names.append(feats.op)
        self.data.op_X.append(feats.vector())
        self.data.op_time.append(timing.median_s)
        return out


def _materialize(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Allocate a meta-built module on ``device`` with cheap random values.

    Default initialisers (Kaiming on a 25088x4096 weight) cost more than timing the layer;
    timings do not depend on the values, only on shapes, so plain normals will do.
    """
    module = module.to_empty(device=device)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.02)
        for b in module.buffers():
            b.fill_(1) if b.is_floating_point() else b.zero_()
    return module.train()


def _too_big(module: torch.nn.Module, shape: tuple[int, ...], batch: int) -> bool:
    n_params = sum(p.numel() for p in module.parameters())
    return batch * int(np.prod(shape)) > _MAX_ACTIVATIONS or n_params > _MAX_PARAMS


def _sample_ops(data, rng, deadline, device, bar) -> None:
    # Every layer kind once first (activations several times), so that even a short
    # calibration knows the common ops; then kinds drawn by weight.
    first = [*LAYER_KINDS, *["act"] * 6, *["maxpool", "avgpool"] * 2, *["dropout"] * 2]
    while _more(len(data.op_time), _MIN_SAMPLES["ops"], deadline):
        t0 = time.perf_counter()
        kind = first.pop(0) if first else None
        for _ in range(20):  # redraw sizes until the layer fits the caps
            with torch.device("meta"):
                module, shape, batch = random_layer(rng, kind)
            if not _too_big(module, shape, batch):
                break
        else:
            continue
        module = _materialize(module, device)
        leaf = torch.randn(batch, *shape, device=device, requires_grad=True)
        x = leaf.clone()  # not a leaf, so in-place activations work as inside a network
        try:
            short = len(data.op_time) < _MIN_SAMPLES["ops"]
            with _OpTimer(data, deadline + _GRACE_S if short else deadline, device, rng):
                training_loss(module(x)).backward()
        except (RuntimeError, ValueError):
            continue  # an invalid random configuration (e.g. batch norm of one value)
        synchronize(device)
        _advance(bar, time.perf_counter() - t0)


def _sample_optimizer(data, rng, deadline, device, bar) -> None:
    kinds = list(OPTIMIZERS)
    # A 30M-parameter Adam step takes a second here: keep short calibrations to small sets.
    max_numel = 3e7 if deadline - time.perf_counter() > 15 else 3e6
    i = 0
    while _more(len(data.opt_time), _MIN_SAMPLES["optimizer"], deadline):
        t0 = time.perf_counter()
        kind = kinds[i % len(kinds)]
        i += 1
        n_tensors = int(np.exp(rng.uniform(0, np.log(400))))
        total = float(np.exp(rng.uniform(np.log(1e3), np.log(max_numel))))
        sizes = np.maximum(1, (rng.dirichlet(np.full(n_tensors, 0.5)) * total).astype(int))
        params = [torch.nn.Parameter(torch.randn(int(s), device=device)) for s in sizes]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = build_optimizer(kind, params)
        timing = median_time(opt.step, warmup=1, repeats=3, max_total_s=2.0, device=device)
        data.opt_kind.append(kind)
        data.opt_n_tensors.append(len(params))
        data.opt_numel.append(float(sizes.sum()))
        data.opt_time.append(timing.median_s)
        _advance(bar, time.perf_counter() - t0)


def _sample_networks(data, rng, deadline, device, bar) -> None:
    kinds = list(OPTIMIZERS)
    i = 0
    while _more(len(data.net_time), _MIN_SAMPLES["networks"], deadline):
        t0 = time.perf_counter()
        with torch.device("meta"):
            net, shape, batch = random_network(rng)
        if _too_big(net, shape, batch):
            continue
        net = _materialize(net, device)
        kind = kinds[i % len(kinds)]
        i += 1
        try:
            trace = trace_training_step(net, shape, batch)
            measured = measure_step_time(
                net, shape, batch, kind, warmup=1, repeats=3, max_total_s=3.0
            )
        except InvalidInputError:
            continue  # an invalid random configuration (e.g. batch norm of one value)
        data.nets.append(NetArrays.from_trace(trace))
        data.net_optimizer.append(kind)
        data.net_time.append(measured.step_time_s)
        _advance(bar, time.perf_counter() - t0)


def _more(count: int, minimum: int, deadline: float) -> bool:
    """Sample until the stage's deadline, or past it (up to a grace period) while the stage
    has fewer samples than the fit needs: on a loaded machine one slow draw must not leave a
    short calibration unusable."""
    now = time.perf_counter()
    return now < deadline or (count < minimum and now < deadline + _GRACE_S)


def _advance(bar, seconds: float) -> None:
    # A stage may overrun its share; tqdm drops the total (and the bar format breaks) once n
    # passes it, so the bar stops at full.
    bar.update(max(0.0, min(seconds, bar.total - bar.n)))


def check_calibration_budget(budget_s: object) -> float:
    """A calibration budget: finite seconds >= 5 (less measures too little to fit)."""
    return check_real("budget_s", budget_s, low=5.0, hint=" seconds")


def collect_calibration(
    budget_s: float = 120.0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> CalibrationData:
    """Measure this device for ``budget_s`` seconds (ops, optimizer updates, networks)."""
    check_calibration_budget(budget_s)
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    speeds = reference_speeds(device)
    data = CalibrationData(
        fingerprint=device_fingerprint(device),
        peak_flops=speeds["peak_flops"],
        bandwidth=speeds["bandwidth"],
        dispatch_s=speeds["dispatch_s"],
        budget_s=float(budget_s),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    remaining = budget_s - (time.perf_counter() - start)
    shares = {k: v for k, v in _SHARES.items() if k != "peaks"}
    total_share = sum(shares.values())
    with tqdm(
        total=round(remaining, 1),
        unit="s",
        desc="calibrating",
        disable=not progress,
        mininterval=1.0,
        bar_format="{desc}{percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s",
    ) as bar:
        for stage, sampler in (
            ("ops", _sample_ops),
            ("optimizer", _sample_optimizer),
            ("networks", _sample_networks),
        ):
            bar.set_description(f"calibrating {stage}")
            deadline = time.perf_counter() + max(3.0, remaining * shares[stage] / total_share)
            with torch.no_grad() if stage == "optimizer" else torch.enable_grad():
                sampler(data, rng, deadline, device, bar)
    data.elapsed_s = time.perf_counter() - start
    counts = {"ops": len(data.op_time), "optimizer": len(data.opt_time)}
    counts["networks"] = len(data.net_time)
    if any(counts[k] < n for k, n in _MIN_SAMPLES.items()):
        raise CalibrationError(
            f"calibration budget {budget_s}s gave too few samples ({data.summary()}); "
            "raise --budget-s"
        )
    return data
