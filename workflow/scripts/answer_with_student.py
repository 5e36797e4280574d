"""The student answers every cache-pool instruction (batched, seeded generation)."""
import torch

from lionflow.artifacts import read_jsonl, write_jsonl
from lionflow.smk import setup_logging
from lionflow.student.generate import GenerateConfig, answer_records

log = setup_logging(snakemake)
torch.set_num_threads(snakemake.threads)
pool = read_jsonl(snakemake.input.pool, "instruction")
cfg = GenerateConfig(**snakemake.params.generate, seed=snakemake.params.seed)
n = write_jsonl(snakemake.output.answers,
                answer_records(snakemake.input.student, pool, cfg, model=f"student:{snakemake.wildcards.k}",
                               device=snakemake.params.device), "answer")
log.info("student answered %d instructions", n)
