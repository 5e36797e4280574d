"""Iteration 1: train pool = cache pool = the seed instructions."""
from lionflow.artifacts import write_jsonl
from lionflow.pools import load_seed_pool
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
pool = load_seed_pool(snakemake.input.seeds)
write_jsonl(snakemake.output.train, pool, "instruction")
write_jsonl(snakemake.output.cache, pool, "instruction")
log.info("seed pool: %d instructions from %s", len(pool), snakemake.input.seeds)
