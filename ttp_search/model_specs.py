"""Resolve model specifications: ``torchvision:NAME`` or ``path/to/file.py:FACTORY``."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path

from torch import nn

from ttp_search.errors import InvalidInputError, ModelSpecError


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"3x32x32"`` → ``(3, 32, 32)``; anything else raises naming the bad text."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise InvalidInputError(
            f"malformed input shape {text!r}: expected positive integers joined by 'x', e.g. 3x32x32"
        )
    return shape


def torchvision_classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(spec: str, model_kwargs: dict | None = None) -> nn.Module:
    """Build the model a spec names, with random weights (nothing is downloaded)."""
    kwargs = dict(model_kwargs or {})
    if not isinstance(spec, str) or ":" not in spec:
        raise ModelSpecError(
            f"model spec {spec!r} must be 'torchvision:NAME' or 'path/to/file.py:FACTORY'"
        )
    source, _, name = spec.rpartition(":")
    if source == "torchvision":
        import torchvision

        names = torchvision_classifiers()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelSpecError(f"unknown torchvision classification model {name!r}{hint}")
        downloads = [k for k in ("weights", "weights_backbone", "pretrained") if kwargs.get(k)]
        if downloads:
            raise ModelSpecError(
                f"model kwargs {', '.join(f'{k}={kwargs[k]!r}' for k in downloads)} would "
                "download weights, which ttp_search never does: build the model with random "
                "weights and load a state_dict you have (--weights FILE)"
            )
        kwargs.setdefault("weights", None)
        try:
            model = torchvision.models.get_model(name, **kwargs)
        except TypeError as exc:
            raise ModelSpecError(
                f"torchvision model {name!r} rejected kwargs {kwargs}: {exc}"
            ) from exc
        return model
    path = Path(source)
    if path.suffix != ".py" or not path.is_file():
        raise ModelSpecError(f"model file {source!r} in spec {spec!r} is not an existing .py file")
    module_name = f"_ttp_user_model_{abs(hash(path.resolve()))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelSpecError(f"cannot import model file {source!r}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelSpecError(f"importing {source!r} failed: {exc}") from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ModelSpecError(f"{source!r} has no callable named {name!r}")
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ModelSpecError(f"factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
