"""The workflow's config for the benchmarks: the schema's defaults (their one home) and a run's whole config."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def schema_defaults(*keys: str) -> dict:
    """The defaults config/schema.yaml gives the keys of one config section (e.g. "student", "train");
    yaml only, so that it runs where snakemake is not installed (the GPU machine)."""
    node = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    for key in keys:
        node = node["properties"][key]
    return {key: spec["default"] for key, spec in node["properties"].items() if "default" in spec}


def load_config(path: str | None = None) -> dict:
    """A run's config as the workflow sees it: config/config.yaml, the given file over it (as --configfile
    does), the schema's defaults filled in by validation."""
    from snakemake.utils import update_config, validate

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if path:
        update_config(config, yaml.safe_load(Path(path).read_text()))
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config


def train_settings(**overrides) -> dict:
    """What the training rule passes to lionflow.student.train, from the schema's defaults: full fine-tuning."""
    return {**schema_defaults("student", "train"), "lora": None, "seed": 0, **overrides}


def generate_config(**overrides):
    """A GenerateConfig from the schema's defaults of student.generate."""
    from lionflow.student.generate import GenerateConfig

    return GenerateConfig(**{**schema_defaults("student", "generate"), "seed": 0, **overrides})
