"""Hard: the teacher beats the student by at least the threshold; easy: the rest."""
from lionflow.artifacts import read_jsonl, write_jsonl
from lionflow.discrimination import split_hard_easy
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
scores = read_jsonl(snakemake.input.scores, "referee_score")
hard, easy = split_hard_easy(scores, snakemake.params.threshold)
write_jsonl(snakemake.output.hard, hard, "scored_instruction")
write_jsonl(snakemake.output.easy, easy, "scored_instruction")
log.info("%d hard, %d easy, %d excluded (referee failures)", len(hard), len(easy), len(scores) - len(hard) - len(easy))
