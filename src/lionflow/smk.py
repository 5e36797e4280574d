"""Glue for workflow/scripts: logging into the rule's log file, config-derived objects."""

from __future__ import annotations

import logging
import sys

from .layout import ledger_dir
from .llm import BUILTIN_SCHEME, LLM, ResponseCache, Role
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


def llm_for(config: dict, role: str) -> LLM:
    """The client of a role, built from the run's config (scripts read it from snakemake.config: prices,
    budget, cache and concurrency are not rule params, see role_identity), its spending recorded in the
    run's ledger (lionflow.layout.ledger_dir)."""
    llm = {**config["llm"], "ledger_dir": ledger_dir(config)}
    spec = Role.from_config({"llm": llm}, role)
    return LLM(spec, ResponseCache(llm["cache_dir"]), transport=in_process_transport(spec.endpoint.base_url))


def in_process_transport(base_url: str):
    """The transport factory of a builtin:// endpoint (the embedded oracle), None for a server."""
    if not base_url.startswith(BUILTIN_SCHEME):
        return None
    from .oracle import transports

    known = transports()
    if base_url not in known:
        raise ValueError(f"config: unknown built-in endpoint {base_url}; known: {', '.join(sorted(known))}")
    return known[base_url]


def judge_llm_for(config: dict, role: str) -> LLM:
    """The judge's or the reference model's client (eval.judge, defaults filled in from the referee and teacher)."""
    from .judge import role_configs

    return llm_for({**config, "llm": role_configs(config["llm"], config["eval"]["judge"])}, role)


def role_identity(llm_config: dict, role: str) -> dict:
    """What of an LLM role can change its answers, as a rule's params: the endpoint's URL, the model,
    the sampling parameters (and how often an unparseable reply is asked again). Prices, budgets,
    concurrency, rate limits, timeouts, the cache and the other roles are not in it, so editing them
    reruns nothing; the prompt file is a rule input."""
    r = llm_config[role]
    identity = {"base_url": llm_config["endpoints"][r["endpoint"]]["base_url"], "model": r["model"],
                "params": r.get("params") or {}}
    if "parse_retries" in r:
        identity["parse_retries"] = r["parse_retries"]
    return identity


def template(path: str) -> PromptTemplate:
    return PromptTemplate.load(path)


def share_rule_settings(workflow, prefixes: list[str]) -> None:
    """Give each module copy of a rule (prefix + name) the --set-resources / --set-threads of `name`.

    The profiles name the stage rules, but Snakemake applies those settings by the final rule name:
    without this, the ablation's arms (modules with prefixed rule names) would train on the default
    resources, without a GPU. Call after loading the modules. It reads the settings from their public
    fields (`ResourceSettings.overwrite_threads/overwrite_resources`, a mapping per rule name, parsed
    or not) and puts them onto the rule objects, not into the settings themselves, which Snakemake
    copies onto every job's command line (and which a job, parsing this Snakefile again, would copy
    once more). A rule's threads are its `_cores` resource, as Snakemake's own `Workflow.rule` sets them.
    What the user names for a copy itself wins, key by key.
    """
    from snakemake.resources import Resource, Resources

    settings = workflow.resource_settings
    for rule in workflow.rules:
        prefix = next((p for p in prefixes if rule.name.startswith(p)), None)
        if prefix is None:
            continue  # not a module copy
        name = rule.name[len(prefix):]
        shared = dict(Resources.from_mapping(settings.overwrite_resources.get(name, {})))
        if name in settings.overwrite_threads:
            threads = settings.overwrite_threads[name]
            shared["_cores"] = threads if isinstance(threads, Resource) else Resource("_cores", threads)
        own = set(Resources.from_mapping(settings.overwrite_resources.get(rule.name, {})))  # keys, normalised
        if rule.name in settings.overwrite_threads:
            own.add("_cores")
        rule.resources.update(Resources({k: v for k, v in shared.items() if k not in own}))
