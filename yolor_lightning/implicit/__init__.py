"""Implicit knowledge `y = f_θ(x) ⋆ g_φ(z)`: priors g_φ (vector | nn | mf), operators ⋆
(add | mul | concat), the Implicit layer next to a 1x1 convolution, and folding into it."""

from yolor_lightning.implicit.layer import Implicit, ImplicitConv2d, fold, make_implicit
from yolor_lightning.implicit.operators import IDENTITY, OPERATORS, combine
from yolor_lightning.implicit.priors import (
    COEFFICIENTS,
    PRIORS,
    MFPrior,
    NNPrior,
    VectorPrior,
    make_prior,
    sparsity_penalty,
)

__all__ = [
    "COEFFICIENTS",
    "IDENTITY",
    "OPERATORS",
    "PRIORS",
    "Implicit",
    "ImplicitConv2d",
    "MFPrior",
    "NNPrior",
    "VectorPrior",
    "combine",
    "fold",
    "make_implicit",
    "make_prior",
    "sparsity_penalty",
]
