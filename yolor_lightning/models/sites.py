"""The implicit-knowledge sites of the unified network: config keys, paper names, operators, and
the task whose branch each one sits in."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

SITE_OPERATORS: dict[str, tuple[str, ...]] = {
    "fa": ("add", "mul", "concat"),  # each level's features, before the prediction conv
    "pr": ("add", "mul"),  # each level's raw prediction, after the conv
    "fa_star": ("mul",),  # one vector per anchor: the features that anchor's outputs read
    "pr_star": ("mul",),  # one (w, h) pair per anchor: its w and h outputs only
    "task_cls": ("add", "mul", "concat"),  # the pooled features the cls branch reads
    "task_emb": ("add", "mul", "concat"),  # each level's features, before the emb conv
}
"""The implicit-knowledge sites (config keys) and the operators each allows."""

SITE_LABELS: dict[str, str] = {
    "fa": "fa",
    "pr": "pr",
    "fa_star": "fa*",
    "pr_star": "pr*",
    "task_cls": "task.cls",
    "task_emb": "task.emb",
}
"""Site names as the paper, the docs and results.json write them (`*` and `.` cannot appear in
Hydra override keys)."""

SITE_TASKS: dict[str, str] = {
    "fa": "det",
    "pr": "det",
    "fa_star": "det",
    "pr_star": "det",
    "task_cls": "cls",
    "task_emb": "emb",
}
"""The task whose branch holds each site."""


def site_problem(site: str, operator: str, tasks: Collection[str] | None = None) -> str | None:
    """Why `operator` cannot sit at `site` of a network with `tasks` (None: any tasks), or None
    when it can."""
    if operator not in SITE_OPERATORS[site]:
        return (
            f"operator {operator!r} is not allowed at implicit site {SITE_LABELS[site]}; "
            f"allowed: {', '.join(SITE_OPERATORS[site])} (or null: site off)"
        )
    if tasks is not None and SITE_TASKS[site] not in tasks:
        return (
            f"implicit site {SITE_LABELS[site]} sits in the {SITE_TASKS[site]} branch, but the "
            f"network's tasks are {sorted(tasks)}"
        )
    return None


def enabled_sites(
    implicit: Mapping[str, Mapping[str, Any]] | None, tasks: Collection[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The sites of an `implicit` mapping (site -> options) whose operator is not None, checked
    with `site_problem`; options are those of `make_implicit` (operator, prior, std, ...)."""
    sites = {}
    for site, options in (implicit or {}).items():
        if site not in SITE_OPERATORS:
            raise ValueError(
                f"unknown implicit site {site!r}; allowed: {', '.join(SITE_OPERATORS)}"
            )
        operator = options.get("operator")
        if operator is None:
            continue
        problem = site_problem(site, operator, tasks)
        if problem:
            raise ValueError(problem)
        sites[site] = dict(options)
    return sites


def sites_of(task: str, sites: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries of `sites` that sit in `task`'s branch."""
    return {site: dict(options) for site, options in sites.items() if SITE_TASKS[site] == task}
