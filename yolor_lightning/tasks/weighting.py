"""How the losses of several tasks add up: fixed weights, or learned uncertainty weighting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

WEIGHTINGS = ("fixed", "uncertainty")
"""The selectable task weightings (``task.weighting.mode``)."""


class TaskWeighting(nn.Module):
    """`fixed`: `sum_t w_t L_t`. `uncertainty`: `sum_t exp(-s_t) w_t L_t + s_t` with one learned
    log-variance `s_t` per task (Kendall et al., 2018, in the form JDE uses), starting at 0, i.e.
    at the fixed weighting; `w_t` sets each task's scale in both modes."""

    def __init__(self, tasks: Sequence[str], mode: str, weights: Mapping[str, float]):
        super().__init__()
        if mode not in WEIGHTINGS:
            raise ValueError(
                f"task.weighting.mode={mode!r} is unknown: allowed values are {list(WEIGHTINGS)}"
            )
        self.tasks = tuple(tasks)
        self.mode = mode
        self.weights = {task: float(weights[task]) for task in self.tasks}
        self.log_variances = (
            nn.Parameter(torch.zeros(len(self.tasks))) if mode == "uncertainty" else None
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Log-variances back to 0: the fixed weighting."""
        if self.log_variances is not None:
            self.log_variances.zero_()

    def factors(self) -> dict[str, Tensor]:
        """The factor each task's loss is multiplied by now."""
        factors = {task: torch.tensor(self.weights[task]) for task in self.tasks}
        if self.log_variances is not None:
            scales = torch.exp(-self.log_variances.detach().cpu())
            factors = {
                task: factors[task] * scale for task, scale in zip(self.tasks, scales, strict=True)
            }
        return factors

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        if self.log_variances is None:
            return sum(self.weights[task] * losses[task] for task in self.tasks)
        return sum(
            torch.exp(-s) * self.weights[task] * losses[task] + s
            for task, s in zip(self.tasks, self.log_variances, strict=True)
        )
