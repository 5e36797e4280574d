"""The teacher answers every instruction of a pool (train pool: imitation; cache pool: discrimination)."""
from lionflow.artifacts import read_jsonl, write_json, write_jsonl
from lionflow.imitation import excluded_counts, teacher_answers
from lionflow.smk import llm_for, setup_logging, template

log = setup_logging(snakemake)
pool = read_jsonl(snakemake.input.pool, "instruction")
teacher = llm_for(snakemake.config, "teacher")
answers, failed = teacher_answers(teacher, template(snakemake.input.prompt), pool,
                                  max_failure_rate=snakemake.config["llm"]["failure_tolerance"],
                                  checks=snakemake.config["llm"]["answer_checks"])
write_jsonl(snakemake.output.answers, answers, "answer")
write_json(snakemake.output.stats, teacher.stats.as_dict(teacher.role)
           | {"failed_requests": failed, "excluded_answers": excluded_counts(failed)}, "llm_stats")
for f in failed:
    log.warning("left out of training: %s: %s", f["id"], f["error"])
log.info("teacher: %d answers, %d failed or excluded (%s); %s", len(answers), len(failed), excluded_counts(failed),
         teacher.stats)
