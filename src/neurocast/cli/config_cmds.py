"""`neurocast config ...`: inspect configs."""

from __future__ import annotations

import argparse
import sys

from neurocast.cli import register, with_overrides


def _config_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file or preset name (e.g. latent_20step)")
    with_overrides(p)


@register("show", "print the resolved config (YAML file + overrides)", _config_show_args, group="config")
def _cmd_config_show(args: argparse.Namespace) -> int:
    from neurocast.config import to_yaml
    from neurocast.presets_index import resolve_config_path
    from neurocast.tasks import load_task_config

    cfg = load_task_config(resolve_config_path(args.config), args.overrides)
    sys.stdout.write(to_yaml(cfg))
    return 0


def _config_reference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", nargs="?", default=None, help="one task (default: all)")


@register("reference", "print the Markdown reference of every config key (docs/CONFIG.md)", _config_reference_args,
          group="config")
def _cmd_config_reference(args: argparse.Namespace) -> int:
    from neurocast.config_reference import reference

    sys.stdout.write(reference(args.task))
    return 0
