"""Glue for workflow/scripts: logging into the rule's log file, config-derived objects."""

from __future__ import annotations

import logging
import sys

from .llm import LLM, ResponseCache, Role
from .prompts import PromptTemplate


def setup_logging(snakemake) -> logging.Logger:
    """Send the script's logging and stderr (tracebacks, progress bars) to the rule's log."""
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "a", buffering=1, encoding="utf-8")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai"):  # one line per request drowns the progress bar
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(f"lionflow.{snakemake.rule}")


def llm_for(llm_config: dict, role: str) -> LLM:
    return LLM(Role.from_config({"llm": llm_config}, role), ResponseCache(llm_config["cache_dir"]))


def template(path: str) -> PromptTemplate:
    return PromptTemplate.load(path)
