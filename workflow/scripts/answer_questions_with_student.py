"""A student checkpoint (base or an iteration's) answers the open-ended evaluation questions."""
import torch

from lionflow.artifacts import write_jsonl
from lionflow.judge import load_questions
from lionflow.smk import setup_logging
from lionflow.student.generate import GenerateConfig, answer_records

log = setup_logging(snakemake)
torch.set_num_threads(snakemake.threads)
questions = load_questions(snakemake.input.questions, snakemake.params.limit)
cfg = GenerateConfig(**snakemake.params.generate, seed=snakemake.params.seed)
checkpoint = snakemake.wildcards.checkpoint
n = write_jsonl(snakemake.output.answers,
                answer_records(snakemake.input.student, questions, cfg, model=f"student:{checkpoint}",
                               device=snakemake.params.device), "answer")
log.info("student %s answered %d questions", checkpoint, n)
