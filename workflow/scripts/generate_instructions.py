"""New hard instructions from hard examples, new easy ones from easy examples, filtered."""
from lionflow.artifacts import read_jsonl, write_json, write_jsonl
from lionflow.generation import Filters, generate_instructions
from lionflow.smk import llm_for, setup_logging, template

log = setup_logging(snakemake)
cfg = snakemake.params.generation
k = int(snakemake.wildcards.k)
generator = llm_for(snakemake.params.llm, "generator")
filters = Filters(min_words=cfg["min_words"], rouge_threshold=cfg["rouge_threshold"], leak_words=tuple(cfg["leak_words"]))
pool = [r["instruction"] for r in read_jsonl(snakemake.input.cache_pool, "instruction")]
rejected = []
for origin in ("hard", "easy"):
    kept, dropped = generate_instructions(
        generator, template(snakemake.input[f"prompt_{origin}"]), read_jsonl(snakemake.input[origin], "scored_instruction"),
        origin=origin, count=cfg[f"new_{origin}"], iteration=k, pool=pool, filters=filters,
        seed=snakemake.params.seed, max_rounds=cfg["max_rounds"])
    write_jsonl(snakemake.output[f"new_{origin}"], kept, "instruction")
    rejected += dropped
    log.info("new %s: %d kept, %d rejected", origin, len(kept), len(dropped))
write_jsonl(snakemake.output.rejected, rejected, "rejected_instruction")
write_json(snakemake.output.stats, generator.stats.as_dict(generator.role), "llm_stats")
log.info("generator: %s", generator.stats)
