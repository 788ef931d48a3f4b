"""Which SGD kernel runs the optimiser step."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices


def sgd_kernel(parameters: Iterable[Tensor]) -> dict[str, bool]:
    """``torch.optim.SGD`` keyword arguments choosing its fastest update for ``parameters``.

    torch's own default on the CPU is a Python loop over the tensors; its fused kernel (CPU,
    CUDA and the other devices torch lists) updates every tensor of a group in one call, with
    the same arithmetic. Parameters on a device without one get the ``foreach`` update.
    """
    supported = set(_get_fused_kernels_supported_devices())
    if all(parameter.device.type in supported for parameter in parameters):
        return {"fused": True}
    return {"foreach": True}
