"""Next train pool = the new instructions (or all); next cache pool = cache pool + new."""
from lionflow.pools import write_next_pools
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
n_train, n_cache = write_next_pools(snakemake.input.cache_pool, [snakemake.input.new_hard, snakemake.input.new_easy],
                                    snakemake.params.mode, snakemake.output.train, snakemake.output.cache)
log.info("next train pool: %d, next cache pool: %d", n_train, n_cache)
