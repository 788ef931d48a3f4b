"""Config schemas and value checks: a misspelled choice or an out-of-range value stops the run
with a message that names the config key and what it allows.

Types and choices are enforced by structured configs (registered in Hydra's ConfigStore and
pulled into the YAML files through their defaults lists): ``data.batch_size=8.5`` is refused,
``data.skip_bad=no`` is false. Numeric ranges, which OmegaConf cannot express, keys that must
agree, and finiteness (no ``inf`` / ``nan`` anywhere in the config) are checked by
:func:`check_values`, before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from enum import Enum
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from yolor_lightning.data.sampling import SAMPLERS, PKBatch
from yolor_lightning.data.shapes import ShapesConfig
from yolor_lightning.data.transforms import Augment
from yolor_lightning.implicit import COEFFICIENTS, OPERATORS, PRIORS
from yolor_lightning.models import (
    AUXILIARY_BRANCHES,
    BACKBONES,
    DETECTION_HEADS,
    NECKS,
    TASKS,
)
from yolor_lightning.models.dfl_head import DFL_SITE_OPERATORS
from yolor_lightning.models.norms import NORMS
from yolor_lightning.models.sites import SITE_OPERATORS, SITE_TASKS, site_problem
from yolor_lightning.tasks.embedding import EMBEDDING_LOSSES, TRIPLET_MINING
from yolor_lightning.tasks.weighting import WEIGHTINGS

Backbone = Enum("Backbone", {name: name for name in BACKBONES.names})
Neck = Enum("Neck", {name: name for name in NECKS.names})
DetectionHead = Enum("DetectionHead", {name: name for name in DETECTION_HEADS.names})
AuxiliaryBranch = Enum("AuxiliaryBranch", {name: name for name in AUXILIARY_BRANCHES.names})
ImplicitOperator = Enum("ImplicitOperator", {name: name for name in OPERATORS})
ImplicitPrior = Enum("ImplicitPrior", {name: name for name in PRIORS})
Coefficients = Enum("Coefficients", {name: name for name in COEFFICIENTS})
EmbeddingLoss = Enum("EmbeddingLoss", {name: name for name in EMBEDDING_LOSSES})
TripletMining = Enum("TripletMining", {name: name for name in TRIPLET_MINING})
Weighting = Enum("Weighting", {name: name for name in WEIGHTINGS})
Norm = Enum("Norm", {name: name for name in NORMS})
Sampler = Enum("Sampler", {name: name for name in SAMPLERS})


class ConfigValueError(ValueError):
    """A config value outside its allowed range."""


@dataclass
class ImplicitSiteSchema:
    """One implicit-knowledge site; `operator: null` turns it off."""

    operator: ImplicitOperator | None = None  # type: ignore[valid-type]
    prior: ImplicitPrior = ImplicitPrior.vector  # type: ignore[valid-type,attr-defined]
    std: float = 0.02
    latent_dim: int | None = None  # nn only; null: 2C
    bases: int | None = None  # mf only; null: 2C
    coefficients: Coefficients = Coefficients.free  # type: ignore[valid-type,attr-defined]


@dataclass
class ImplicitSchema:
    fa: ImplicitSiteSchema = field(default_factory=ImplicitSiteSchema)
    pr: ImplicitSiteSchema = field(default_factory=ImplicitSiteSchema)
    fa_star: ImplicitSiteSchema = field(default_factory=ImplicitSiteSchema)
    pr_star: ImplicitSiteSchema = field(default_factory=ImplicitSiteSchema)
    task_cls: ImplicitSiteSchema = field(default_factory=ImplicitSiteSchema)
    task_emb: ImplicitSiteSchema = field(default_factory=ImplicitSiteSchema)


@dataclass
class ModelSchema:
    """A network from named parts (`models.registry`). `size` is checked by :func:`check_values`
    against the sizes of the chosen model's parts, not typed here: a multirun composes its
    command line before a job's experiment picks the model."""

    name: str = MISSING
    backbone: Backbone = MISSING  # type: ignore[valid-type]
    neck: Neck = MISSING  # type: ignore[valid-type]
    head: DetectionHead = DetectionHead.anchor  # type: ignore[valid-type,attr-defined]
    auxiliary: AuxiliaryBranch | None = None  # type: ignore[valid-type]
    size: str = MISSING
    num_classes: int = MISSING
    tasks: list[str] = MISSING
    embedding_dim: int = 128
    norm: Norm = Norm.bn  # type: ignore[valid-type,attr-defined]
    implicit: ImplicitSchema = field(default_factory=ImplicitSchema)


@dataclass
class RevColSchema(ModelSchema):
    """RevCol: `reversible` backward (recompute instead of store), `drop_path` (null: the
    size's rate)."""

    name: str = "revcol"
    reversible: bool = True
    drop_path: float | None = None


def _schema_of(frozen: type) -> type:
    """A structured-config schema with the fields (names, types, defaults) of the frozen
    dataclass ``frozen``: one definition for the code and the config (OmegaConf makes a frozen
    dataclass read-only, so it cannot be the schema itself)."""
    hints = get_type_hints(frozen)
    return make_dataclass(
        f"{frozen.__name__}Schema",
        [(f.name, hints[f.name], field(default=f.default)) for f in fields(frozen)],
    )


AugmentSchema = _schema_of(Augment)
ShapesSchema = _schema_of(ShapesConfig)
PKSchema = _schema_of(PKBatch)


@dataclass
class DataSchema:
    """A DataModule's settings (``conf/data/*.yaml``)."""

    _target_: str = MISSING
    name: str = MISSING
    root: str | None = None
    num_classes: int = MISSING
    image_size: int = 256
    batch_size: int = 32
    num_workers: int = 2
    val_cache_mb: float = 1024
    skip_bad: bool = False
    identity_key: str | None = "track_id"
    sampler: Sampler = Sampler.shuffle  # type: ignore[valid-type,attr-defined]
    pk: PKSchema = field(default_factory=PKSchema)  # type: ignore[valid-type]
    augment: AugmentSchema = field(default_factory=AugmentSchema)  # type: ignore[valid-type]


@dataclass
class ShapesDataSchema(DataSchema):
    shapes: ShapesSchema = field(default_factory=ShapesSchema)  # type: ignore[valid-type]


@dataclass
class OptimizerSchema:
    lr: float = 0.01
    momentum: float = 0.937
    nesterov: bool = True
    weight_decay: float = 0.0005
    nominal_batch_size: int = 64
    accumulate_to_nominal: bool = False


@dataclass
class ScheduleSchema:
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    final_lr_fraction: float = 0.1
    min_warmup_steps: int = 0
    cosine_per_epoch: bool = False


@dataclass
class DFLLossSchema:
    """The loss of the dfl head (YOLOv9's gains and task-aligned assigner settings)."""

    box_gain: float = 7.5
    cls_gain: float = 0.5
    dfl_gain: float = 1.5
    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0


@dataclass
class LossSchema:
    """The anchor head's loss; `dfl`: the dfl head's."""

    box_gain: float = 0.05
    obj_gain: float = 1.0
    cls_gain: float = 0.5
    anchor_threshold: float = 4.0
    level_weights: list[float] = field(default_factory=lambda: [4.0, 1.0, 0.4])
    label_smoothing: float = 0.0
    # Focal loss around the objectness and class BCE (YOLOR's FocalLoss); gamma 0: plain BCE.
    fl_gamma: float = 0.0
    fl_alpha: float = 0.25
    # Weight of the L1 penalty on sparse mf coefficients (model.implicit.*.coefficients=sparse).
    sparsity_gain: float = 0.001
    dfl: DFLLossSchema = field(default_factory=DFLLossSchema)
    # Weight of the auxiliary branch's det loss (model.auxiliary, YOLOv9's PGI) against the main.
    auxiliary_gain: float = 0.25


@dataclass
class EvaluationSchema:
    conf_threshold: float = 0.001
    iou_threshold: float = 0.65
    max_detections: int = 300
    max_candidates: int = 3000


@dataclass
class ClassificationSchema:
    label_smoothing: float = 0.0


@dataclass
class EmbeddingSchema:
    loss: EmbeddingLoss = EmbeddingLoss.id_ce  # type: ignore[valid-type,attr-defined]
    margin: float = 0.3  # triplet only
    mining: TripletMining = TripletMining.hard  # type: ignore[valid-type,attr-defined]


@dataclass
class TaskWeightsSchema:
    det: float = 1.0
    cls: float = 1.0
    emb: float = 1.0


@dataclass
class WeightingSchema:
    mode: Weighting = Weighting.fixed  # type: ignore[valid-type,attr-defined]
    weights: TaskWeightsSchema = field(default_factory=TaskWeightsSchema)


@dataclass
class TaskSchema:
    name: str = MISSING
    targets: list[str] = MISSING
    monitor: str = MISSING
    optimizer: OptimizerSchema = field(default_factory=OptimizerSchema)
    schedule: ScheduleSchema = field(default_factory=ScheduleSchema)
    loss: LossSchema = field(default_factory=LossSchema)
    evaluation: EvaluationSchema = field(default_factory=EvaluationSchema)
    cls: ClassificationSchema = field(default_factory=ClassificationSchema)
    emb: EmbeddingSchema = field(default_factory=EmbeddingSchema)
    weighting: WeightingSchema = field(default_factory=WeightingSchema)
    channels_last: bool = True


def register_schemas() -> None:
    """Make the schemas available to the YAML defaults lists (idempotent)."""
    store = ConfigStore.instance()
    store.store(group="model", name="model_schema", node=ModelSchema)
    store.store(group="model", name="revcol_schema", node=RevColSchema)
    store.store(group="task", name="task_schema", node=TaskSchema)
    store.store(group="data", name="data_schema", node=DataSchema)
    store.store(group="data", name="shapes_data_schema", node=ShapesDataSchema)


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _fraction(value: float) -> bool:
    return 0 <= value <= 1


def _open_fraction(value: float) -> bool:
    return 0 < value <= 1


def _below_one(value: float) -> bool:
    return 0 <= value < 1


def _multiple_of_32(value: int) -> bool:
    return value > 0 and value % 32 == 0


def _positive_integer(value: float) -> bool:
    return value == int(value) and value > 0


def _batch_limit(value: float) -> bool:
    """Lightning's ``limit_*_batches``: a fraction of the batches, or a number of them."""
    return 0 < value <= 1 or (isinstance(value, int) and value >= 1)


_LIMIT = "a fraction in (0, 1] or a number of batches >= 1"


_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "data.image_size": (_multiple_of_32, "a positive multiple of 32 (the largest stride)"),
    "data.batch_size": (_positive, "> 0"),
    "data.num_classes": (_positive, "> 0"),
    "task.optimizer.lr": (_positive, "> 0"),
    "task.optimizer.momentum": (_below_one, "in [0, 1)"),
    "task.optimizer.weight_decay": (_non_negative, ">= 0"),
    "task.optimizer.nominal_batch_size": (_positive, "> 0"),
    "task.schedule.warmup_epochs": (_non_negative, ">= 0"),
    "task.schedule.warmup_momentum": (_below_one, "in [0, 1)"),
    "task.schedule.warmup_bias_lr": (_non_negative, ">= 0"),
    "task.schedule.final_lr_fraction": (_fraction, "in [0, 1]"),
    "task.schedule.min_warmup_steps": (_non_negative, ">= 0"),
    "task.loss.box_gain": (_non_negative, ">= 0"),
    "task.loss.obj_gain": (_non_negative, ">= 0"),
    "task.loss.cls_gain": (_non_negative, ">= 0"),
    "task.loss.anchor_threshold": (lambda v: v > 1, "> 1"),
    "task.loss.label_smoothing": (_below_one, "in [0, 1)"),
    "task.loss.fl_gamma": (_non_negative, ">= 0 (0: no focal loss)"),
    "task.loss.fl_alpha": (lambda v: 0 < v < 1, "in (0, 1)"),
    "task.loss.sparsity_gain": (_non_negative, ">= 0"),
    **{f"task.loss.dfl.{k}": (_non_negative, ">= 0") for k in ("box_gain", "cls_gain", "dfl_gain")},
    "task.loss.dfl.topk": (_positive, "> 0"),
    "task.loss.auxiliary_gain": (_non_negative, ">= 0"),
    "task.loss.dfl.alpha": (_non_negative, ">= 0"),
    "task.loss.dfl.beta": (_non_negative, ">= 0"),
    "task.evaluation.conf_threshold": (_fraction, "in [0, 1]"),
    "task.evaluation.iou_threshold": (_open_fraction, "in (0, 1]"),
    "task.evaluation.max_detections": (_positive, "> 0"),
    "task.evaluation.max_candidates": (_positive, "> 0"),
    "task.cls.label_smoothing": (_below_one, "in [0, 1)"),
    "task.emb.margin": (_positive, "> 0"),
    **{f"task.weighting.weights.{t}": (_non_negative, ">= 0") for t in TASKS},
    "model.embedding_dim": (_positive, "> 0"),
    "model.drop_path": (_below_one, "in [0, 1) (or null: the size's rate)"),
    "seed": (lambda v: v == int(v) and 0 <= v <= 2**32 - 1, "an integer in [0, 2**32 - 1]"),
    "data.num_workers": (_non_negative, ">= 0"),
    "data.val_cache_mb": (_non_negative, ">= 0 (MiB; 0: load the validation split every time)"),
    "data.pk.identities": (_positive_integer, "an integer > 0 (P identities per batch)"),
    "data.pk.instances": (_positive_integer, "an integer > 0 (K images per identity)"),
    "data.augment.mosaic": (_fraction, "in [0, 1] (a probability)"),
    "data.augment.mixup": (_fraction, "in [0, 1] (a probability)"),
    "data.augment.flip_lr": (_fraction, "in [0, 1] (a probability)"),
    "data.augment.hsv_h": (lambda v: 0 <= v <= 0.5, "in [0, 0.5] (of the hue circle)"),
    "data.augment.hsv_s": (_fraction, "in [0, 1] (a relative change)"),
    "data.augment.hsv_v": (_fraction, "in [0, 1] (a relative change)"),
    **{f"data.shapes.{key}": (_positive, "> 0") for key in ("num_train", "num_val", "image_size")},
    "trainer.max_epochs": (_positive_integer, "an integer > 0"),
    "trainer.check_val_every_n_epoch": (_positive_integer, "an integer > 0"),
    "trainer.limit_train_batches": (_batch_limit, _LIMIT),
    "trainer.limit_val_batches": (
        _batch_limit,
        f"{_LIMIT}: validation picks the best checkpoint and gives the results",
    ),
    "callbacks.ema.decay": (_below_one, "in [0, 1)"),
    "callbacks.ema.ramp_steps": (_positive, "> 0"),
    **{
        f"model.implicit.{site}.{key}": rule
        for site in SITE_OPERATORS
        for key, rule in (
            ("std", (_non_negative, ">= 0")),
            ("latent_dim", (_positive, "> 0 (or null: 2C)")),
            ("bases", (_positive, "> 0 (or null: 2C)")),
        )
    },
}

# Options read by one prior only: setting them for another prior is a mistake, not a no-op.
_PRIOR_OPTIONS = {"latent_dim": ("nn", None), "bases": ("mf", None), "coefficients": ("mf", "free")}


def check_values(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` naming the first key whose value is out of range."""
    _check_finite(OmegaConf.to_container(cfg, resolve=False), "")
    for key, (is_valid, allowed) in _RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigValueError(
                f"config key {key}={value!r} is invalid: must be a number, {allowed}"
            )
        if not is_valid(value):
            raise ConfigValueError(f"config key {key}={value!r} is invalid: must be {allowed}")
    weights = OmegaConf.select(cfg, "task.loss.level_weights", default=None)
    if weights is not None and (len(weights) != 3 or any(w < 0 for w in weights)):
        raise ConfigValueError(
            f"config key task.loss.level_weights={list(weights)} is invalid: "
            "must be 3 non-negative weights, one per level (strides 8/16/32)"
        )
    _check_model_size(cfg)
    _check_tasks(cfg)
    _check_embedding(cfg)
    _check_implicit_sites(cfg)
    _check_dfl_head(cfg)
    _check_norm(cfg)
    _check_validation_runs(cfg)
    _check_switches(cfg)


SWITCHES = ("trainer.compile", "trainer.keep_freed_memory")
"""Keys that turn a part of the run on or off: ``true`` or ``false``, nothing else."""


def _check_switches(cfg: DictConfig) -> None:
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key, default=False)
        if not isinstance(value, bool):
            raise ConfigValueError(
                f"config key {key}={value!r} is invalid: allowed values are true or false"
            )


def _check_finite(node: object, key: str) -> None:
    """No ``inf`` or ``nan`` anywhere (a learning rate of ``inf`` trains nothing but NaNs)."""
    if isinstance(node, dict):
        for child, value in node.items():
            _check_finite(value, f"{key}.{child}" if key else str(child))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_finite(value, f"{key}[{index}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigValueError(f"config key {key}={node} is invalid: must be a finite number")


def _check_validation_runs(cfg: DictConfig) -> None:
    """With ``callbacks.checkpoint.evaluate=best``, validation runs at least once during the fit:
    it picks the best checkpoint. (``last`` is validated by the final pass in any case.)"""
    every = OmegaConf.select(cfg, "trainer.check_val_every_n_epoch", default=None)
    epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    evaluate = OmegaConf.select(cfg, "callbacks.checkpoint.evaluate", default="best")
    if evaluate == "best" and every is not None and epochs is not None and every > epochs:
        raise ConfigValueError(
            f"config key trainer.check_val_every_n_epoch={every} is invalid: must be <= "
            f"trainer.max_epochs={epochs}, or no validation picks the best checkpoint "
            "(callbacks.checkpoint.evaluate=best)"
        )


def _name(value: object) -> object:
    """An Enum member's name (OmegaConf keeps enum-typed values as members), else the value."""
    return value.name if isinstance(value, Enum) else value


def _check_model_size(cfg: DictConfig) -> None:
    """`model.size` is one of the sizes the model's backbone (and auxiliary branch) registered."""
    model = OmegaConf.select(cfg, "model", default=None)
    if model is None or OmegaConf.select(model, "size", default=None) is None:
        return
    for registry, key in ((BACKBONES, "backbone"), (AUXILIARY_BRANCHES, "auxiliary")):
        part = _name(OmegaConf.select(model, key, default=None))
        sizes = registry.sizes_of(part) if part is not None else ()
        if sizes and model.size not in sizes:
            raise ConfigValueError(
                f"config key model.size={model.size!r} is invalid for model={model.name}: must "
                f"be one of {', '.join(sizes)} (the sizes of its {registry.kind} {part})"
            )


def _check_tasks(cfg: DictConfig) -> None:
    """`task.targets` names known tasks; emb comes with det (it reads detection cells)."""
    targets = OmegaConf.select(cfg, "task.targets", default=None)
    if targets is None:
        return
    if not targets or any(t not in TASKS for t in targets) or len(set(targets)) < len(targets):
        raise ConfigValueError(
            f"config key task.targets={list(targets)} is invalid: a non-empty subset of "
            f"{list(TASKS)} without repeats"
        )
    if "emb" in targets and "det" not in targets:
        raise ConfigValueError(
            f"config key task.targets={list(targets)} is invalid: emb reads its embeddings at "
            "the cells the detection head assigns, so it needs det (task=jde)"
        )
    tasks = OmegaConf.select(cfg, "model.tasks", default=None)
    if tasks is not None and list(tasks) != list(targets):
        raise ConfigValueError(
            f"config key model.tasks={list(tasks)} is invalid: it must equal task.targets="
            f"{list(targets)} (the heads are the targets; set task=det|cls|jdc|jde or "
            "task.targets, and model.tasks follows)"
        )


def _check_embedding(cfg: DictConfig) -> None:
    """`task.emb.mining` is the triplet loss's: another mining with `id_ce` is a mistake."""
    mining = _name(OmegaConf.select(cfg, "task.emb.mining", default=None))
    loss = _name(OmegaConf.select(cfg, "task.emb.loss", default=None))
    if mining not in (None, "hard") and loss != "triplet":
        raise ConfigValueError(
            f"config key task.emb.mining={mining!r} is only read by task.emb.loss=triplet, "
            f"but task.emb.loss={loss!r}"
        )


def _check_dfl_head(cfg: DictConfig) -> None:
    """The dfl head has no anchors (no fa*, pr*) and folds fa into a grouped conv (no concat);
    its loss has no focal or label-smoothing option (the anchor loss's)."""
    if _name(OmegaConf.select(cfg, "model.head", default=None)) != "dfl":
        return
    for key in ("task.loss.fl_gamma", "task.loss.label_smoothing"):
        if OmegaConf.select(cfg, key, default=0):
            raise ConfigValueError(
                f"config key {key}={OmegaConf.select(cfg, key)} is only read by the anchor "
                "head's loss (model.head=anchor), but model.head=dfl"
            )
    for site, options in (OmegaConf.select(cfg, "model.implicit", default=None) or {}).items():
        operator = _name(options.operator)
        if operator is None or SITE_TASKS[site] != "det":
            continue
        if operator not in DFL_SITE_OPERATORS.get(site, ()):
            raise ConfigValueError(
                f"config key model.implicit.{site}.operator={operator!r} is invalid with "
                "model.head=dfl: its detection sites are "
                + ", ".join(f"{s} ({'|'.join(o)})" for s, o in DFL_SITE_OPERATORS.items())
            )


def _check_norm(cfg: DictConfig) -> None:
    """`model.norm=syncbn` is not for DDP on CPUs: PyTorch's SyncBatchNorm synchronises GPU
    tensors only (in one process it is batch norm)."""
    if _name(OmegaConf.select(cfg, "model.norm", default=None)) != "syncbn":
        return
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None)
    strategy = str(OmegaConf.select(cfg, "trainer.strategy", default=""))
    if accelerator == "cpu" and strategy.startswith("ddp"):
        raise ConfigValueError(
            "config key model.norm='syncbn' is invalid with trainer.accelerator=cpu and "
            f"trainer.strategy={strategy}: SyncBatchNorm synchronises GPU tensors only "
            "(use model.norm=bn or gn with trainer=ddp_cpu)"
        )


def _check_implicit_sites(cfg: DictConfig) -> None:
    """Each enabled site's operator is one it allows, in a branch the network has; prior
    options match the prior."""
    sites = OmegaConf.select(cfg, "model.implicit", default=None) or {}
    tasks = OmegaConf.select(cfg, "model.tasks", default=None)
    for site, options in sites.items():
        key = f"model.implicit.{site}"
        operator = _name(options.operator)
        if operator is None:
            continue
        problem = site_problem(site, operator, tasks)
        if problem:
            raise ConfigValueError(f"config key {key}.operator={operator!r} is invalid: {problem}")
        prior = _name(options.prior)
        for option, (owner, unset) in _PRIOR_OPTIONS.items():
            if _name(options[option]) != unset and prior != owner:
                raise ConfigValueError(
                    f"config key {key}.{option}={_name(options[option])!r} is only read by "
                    f"prior {owner}, but {key}.prior={prior!r}"
                )


def plain(node: DictConfig) -> dict[str, Any]:
    """A resolved, JSON-friendly copy of a config node (enums as their names)."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The training config as ``python -m yolor_lightning`` would compose it (no run folder)."""
    from hydra import compose, initialize_config_module

    register_schemas()
    with initialize_config_module("yolor_lightning.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides or []))
