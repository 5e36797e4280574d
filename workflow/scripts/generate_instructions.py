"""New hard instructions from hard examples, new easy ones from easy examples (or both from random
cache-pool examples: generation.strategy=uniform), filtered."""
from lionflow.artifacts import write_json, write_jsonl
from lionflow.decontamination import decontaminator
from lionflow.frames import read_frame
from lionflow.generation import Filters, check_next_train_pool, generate_instructions, parent_examples, parent_pool
from lionflow.smk import llm_for, setup_logging, template

log = setup_logging(snakemake)
cfg = snakemake.params.generation
k = int(snakemake.wildcards.k)
generator = llm_for(snakemake.config, "generator")
filters = Filters(min_words=cfg["min_words"], rouge_threshold=cfg["rouge_threshold"], leak_words=tuple(cfg["leak_words"]),
                  decontaminator=decontaminator(snakemake.params.eval_sets, cfg["decontamination"]))
cache_pool = read_frame(snakemake.input.cache_pool, "instruction")
pool = cache_pool["instruction"].to_list()
split = {origin: read_frame(snakemake.input[origin], "scored_instruction") for origin in ("hard", "easy")}
rejected, outputs = [], {}
for origin in ("hard", "easy"):
    examples = parent_examples(cfg["strategy"], origin, hard=split["hard"], easy=split["easy"], cache_pool=cache_pool)
    kept, dropped = generate_instructions(
        generator, template(snakemake.input[f"prompt_{origin}"]), examples,
        origin=origin, count=cfg[f"new_{origin}"], iteration=k, pool=pool, filters=filters,
        seed=snakemake.params.seed, max_rounds=cfg["max_rounds"], drawn_from=parent_pool(cfg["strategy"], origin),
        max_failure_rate=snakemake.config["llm"]["failure_tolerance"])
    outputs[origin] = kept
    rejected += dropped
    log.info("new %s: %d kept, %d rejected", origin, len(kept), len(dropped))
if k < snakemake.config["iterations"]:   # the next iteration's train pool must not be empty
    check_next_train_pool({o: len(kept) for o, kept in outputs.items()}, {o: cfg[f"new_{o}"] for o in outputs},
                          rejected, snakemake.config["pools"]["next_train_pool"], k)
for origin, kept in outputs.items():
    write_jsonl(snakemake.output[f"new_{origin}"], kept, "instruction")
write_jsonl(snakemake.output.rejected, rejected, "rejected_instruction")
write_json(snakemake.output.stats, generator.stats.as_dict(generator.role), "llm_stats")
log.info("generator: %s", generator.stats)
