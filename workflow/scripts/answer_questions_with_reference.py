"""The reference model (the teacher by default) answers the open-ended evaluation questions."""
from lionflow.artifacts import write_json, write_jsonl
from lionflow.imitation import excluded_counts, teacher_answers
from lionflow.judge import load_questions
from lionflow.smk import judge_llm_for, setup_logging, template

log = setup_logging(snakemake)
questions = load_questions(snakemake.input.questions, snakemake.params.limit)
reference = judge_llm_for(snakemake.config, "reference")
# Every question needs its reference answer: the judge compares the student with it on all of them.
checks = {**snakemake.config["llm"]["answer_checks"], "max_excluded_rate": 0.0}
answers, failed = teacher_answers(reference, template(snakemake.input.prompt), questions, max_failure_rate=0.0,
                                  rate_key="the reference (every evaluation question needs its answer)",
                                  checks=checks, checks_key="the reference (every evaluation question needs a usable "
                                  "answer: raise its max_tokens, or set llm.answer_checks to keep)")
write_jsonl(snakemake.output.answers, answers, "answer")
write_json(snakemake.output.stats, reference.stats.as_dict(reference.role)
           | {"failed_requests": failed, "excluded_answers": excluded_counts(failed)}, "llm_stats")
log.info("reference %s answered %d questions; %s", reference.role.model, len(answers), reference.stats)
