"""The parts of the unified network by name: backbones, necks and detection heads.

A part's module registers a factory under a name (`@BACKBONES.register("gelan")`), a config names
it (`model.backbone=gelan`), and `yolor_lightning.models.network.build_network` assembles the
parts. The contracts the factories keep:

- backbone `(size, **options) -> module`: `forward(images) -> [maps]`, finest first, with the
  attributes `out_channels` and `strides` (one entry per map, as timm's `feature_info`);
  `options` are the model-config keys the backbone was registered with
  (`@BACKBONES.register("revcol", options=("reversible", "drop_path"))`), `sizes` the size
  names it takes (`sizes=tuple(REVCOL_SIZES)`: what `model.size` is checked against);
- neck `(in_channels, size) -> module`: `forward(maps) -> [maps]` at the same strides, with the
  attribute `out_channels`;
- detection head `(in_channels, num_classes, strides, implicit) -> module`: `forward(maps)`
  gives its raw outputs, `decode(raw) -> [B, N, 5 + nc]` boxes (cx, cy, w, h in pixels,
  objectness, class probabilities), `strides`, and the implicit sites of `implicit` (folded by
  `yolor_lightning.implicit.fold`);
- auxiliary branch `(size, backbone_channels, num_classes, strides, head) -> module`: a
  training-only branch (YOLOv9's PGI) with `forward(images, backbone_maps)` giving the raw
  outputs of its own det head (the registered `head`, attribute `head`); export drops it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


class Registry:
    """Factories of one kind of part (`kind`: backbone, neck, detection head) by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., nn.Module]] = {}
        self._options: dict[str, tuple[str, ...]] = {}
        self._sizes: dict[str, tuple[str, ...]] = {}

    def register(
        self, name: str, options: tuple[str, ...] = (), sizes: tuple[str, ...] = ()
    ) -> Callable[[Factory], Factory]:
        """Decorator: register a factory under `name` (a name is registered once); `options`:
        the model-config keys it takes as keyword arguments (see `options_of`); `sizes`: the
        size names it takes (see `sizes_of`)."""

        def add(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            self._options[name] = options
            self._sizes[name] = sizes
            return factory

        return add

    def sizes_of(self, name: str) -> tuple[str, ...]:
        """The size names part `name` takes (empty: it takes no size)."""
        return self._sizes.get(name, ())

    def options_of(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of part `name` that `config` (a model config) sets."""
        return {key: config[key] for key in self._options.get(name, ()) if key in config}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def build(self, name: str, *args: Any, **kwargs: Any) -> nn.Module:
        """The part registered as `name`, built with the arguments of its contract."""
        if name not in self._factories:
            raise ValueError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._factories))}"
            )
        return self._factories[name](*args, **kwargs)


BACKBONES = Registry("backbone")
NECKS = Registry("neck")
DETECTION_HEADS = Registry("detection head")
AUXILIARY_BRANCHES = Registry("auxiliary branch")
