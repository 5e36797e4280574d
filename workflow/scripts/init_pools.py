"""Iteration 1: train pool = cache pool = the seed instructions."""
from lionflow.pools import write_seed_pools
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
n = write_seed_pools(snakemake.input.seeds, snakemake.output.train, snakemake.output.cache)
log.info("seed pool: %d instructions from %s", n, snakemake.input.seeds)
