"""The student answers every cache-pool instruction (batched, seeded generation)."""
import torch

from lionflow.artifacts import read_jsonl, write_jsonl
from lionflow.smk import setup_logging
from lionflow.student.generate import GenerateConfig, generate_answers

log = setup_logging(snakemake)
torch.set_num_threads(snakemake.threads)
pool = read_jsonl(snakemake.input.pool, "instruction")
cfg = GenerateConfig(**snakemake.params.generate, seed=snakemake.params.seed)
answers = generate_answers(snakemake.input.student, pool, cfg)
write_jsonl(snakemake.output.answers, [
    {"id": r["id"], "instruction": r["instruction"], "input": r["input"], "answer": a["answer"],
     "model": f"student:{snakemake.wildcards.k}", "finish_reason": a["finish_reason"]}
    for r, a in zip(pool, answers)], "answer")
log.info("student answered %d instructions", len(answers))
