"""Next train pool = the new instructions (or all); next cache pool = cache pool + new."""
from lionflow.artifacts import read_jsonl, write_jsonl
from lionflow.pools import next_pools
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
new = read_jsonl(snakemake.input.new_hard, "instruction") + read_jsonl(snakemake.input.new_easy, "instruction")
train, cache = next_pools(read_jsonl(snakemake.input.cache_pool, "instruction"), new, snakemake.params.mode)
write_jsonl(snakemake.output.train, train, "instruction")
write_jsonl(snakemake.output.cache, cache, "instruction")
log.info("next train pool: %d, next cache pool: %d", len(train), len(cache))
