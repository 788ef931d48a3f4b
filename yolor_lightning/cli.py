"""The command-line style of the tools (summary, export, predict, report): Hydra ``key=value``
overrides of a config under ``conf/`` typed by its schema, as training takes them, and
``--help``; composed without a run folder (a tool writes only what it is asked to).

Training and evaluation are full Hydra apps (``@hydra.main``: run folders, ``-m`` sweeps) and take
the same overrides.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from importlib.resources import files

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from yolor_lightning.config import register_schemas


class ToolConfigError(SystemExit):
    """A bad command line: exits with the tool's name and Hydra's reason (the key, the value)."""


def tool_config(
    prog: str, config_name: str, argv: Sequence[str] | None, aliases: dict[str, str] | None = None
) -> DictConfig:
    """The config ``config_name`` with the overrides of ``argv`` (default ``sys.argv[1:]``),
    checked against its schema, every required (``???``) key given. ``--help`` prints the
    config file's opening comment (its usage) and the config with its defaults, then exits.
    ``aliases`` maps a flag to the override it stands for (``--json``: ``summary.format=json``).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    arguments = [(aliases or {}).get(argument, argument) for argument in arguments]
    register_schemas()
    try:
        with initialize_config_module("yolor_lightning.conf", version_base="1.3"):
            if "--help" in arguments or "-h" in arguments:
                print(_usage(config_name))
                print(OmegaConf.to_yaml(compose(config_name)))
                raise SystemExit(0)
            cfg = compose(config_name, overrides=arguments)
        missing = [key for key in cfg if OmegaConf.is_missing(cfg, key)]  # the tool's own keys
        if missing:
            raise ToolConfigError(f"{prog}: {', '.join(f'{key}=...' for key in missing)} required")
    except (HydraException, OmegaConfBaseException) as error:
        reason = " ".join(str(e).strip() for e in (error, error.__cause__) if e is not None)
        raise ToolConfigError(f"{prog}: {reason}") from None
    return cfg


def _usage(config_name: str) -> str:
    """The comment lines that open ``conf/<config_name>.yaml``."""
    text = files("yolor_lightning.conf").joinpath(f"{config_name}.yaml").read_text()
    lines = itertools.takewhile(lambda line: line.startswith("#"), text.splitlines())
    return "\n".join(line.removeprefix("#").strip() for line in lines) + "\n"
