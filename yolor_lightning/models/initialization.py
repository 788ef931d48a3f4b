"""Initial weights drawn module by module from the run's seed (see :mod:`yolor_lightning.seeding`).

Building a network draws its weights in construction order, so one module more (an implicit
layer) or one wider (a concat site) would shift the draws of every module built after it.
:func:`initialize` re-draws each module's parameters from a stream of its own, named by its path
in the network, so that two configurations with one seed start from bit-identical weights
wherever they share a module, and each extra module (implicit, cls, emb, ...) draws from its own.
"""

from __future__ import annotations

import torch
from torch import nn

from yolor_lightning.implicit import ImplicitConv2d
from yolor_lightning.seeding import stream_seed


def init_keys(module: nn.Module) -> dict[str, nn.Module]:
    """The modules of ``module`` that hold parameters, by the name of their weight stream.

    The name is the module's path, except that the convolution inside an ``ImplicitConv2d`` is
    named as the ``ImplicitConv2d`` itself: the path of the plain convolution it replaces, so a
    prediction conv draws the same weights with and without implicit knowledge around it.
    """
    modules = dict(module.named_modules())
    keys = {}
    for path, child in modules.items():
        if not any(True for _ in child.parameters(recurse=False)):
            continue
        parent, _, attribute = path.rpartition(".")
        wrapper = modules.get(parent)
        key = parent if attribute == "conv" and isinstance(wrapper, ImplicitConv2d) else path
        keys[key] = child
    return keys


@torch.no_grad()
def initialize(module: nn.Module, seed: int) -> None:
    """Re-draw every parameter of ``module`` from its stream ``("weights", key)`` of ``seed``.

    Each module that holds parameters must have ``reset_parameters()`` (torch's layers do, and so
    do this project's); afterwards, modules with ``init_output_priors()`` (the detection head's
    objectness and class bias priors, which go on top of their convolutions' default init)
    apply them, and modules that draw random numbers in their forward pass (`seed_draws()`:
    RevCol's drop path) are given the run's seed for their own streams. The global RNG state is
    left as it was.
    """
    keys = init_keys(module)
    missing = sorted(
        {type(m).__name__ for m in keys.values() if not hasattr(m, "reset_parameters")}
    )
    if missing:
        raise TypeError(
            f"{', '.join(missing)} hold parameters but have no reset_parameters(): "
            "initialize cannot draw their initial weights"
        )
    with torch.random.fork_rng(devices=[]):
        for key, child in keys.items():
            torch.manual_seed(stream_seed(seed, "weights", key))
            child.reset_parameters()
    for child in module.modules():
        if hasattr(child, "init_output_priors"):
            child.init_output_priors()
        if hasattr(child, "seed_draws"):
            child.seed_draws(seed)
