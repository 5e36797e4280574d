"""The judge scores reference vs student answers in both orders; relative scores per category."""
from lionflow.artifacts import read_jsonl, write_json, write_jsonl
from lionflow.discrimination import failed_verdicts
from lionflow.failures import check_failure_rate
from lionflow.judge import judge_answers, load_questions, relative_scores
from lionflow.smk import judge_llm_for, setup_logging, template

log = setup_logging(snakemake)
questions = load_questions(snakemake.input.questions, snakemake.params.limit)
judge = judge_llm_for(snakemake.config, "judge")
records = judge_answers(judge, template(snakemake.input.prompt), questions,
                        reference=read_jsonl(snakemake.input.reference, "answer"),
                        student=read_jsonl(snakemake.input.student, "answer"),
                        parse_retries=snakemake.params.parse_retries)
failures = check_failure_rate("judge", "question", failed_verdicts(records), len(records),
                              snakemake.config["eval"]["judge"]["max_failure_rate"], "eval.judge.max_failure_rate")
result = relative_scores(records, checkpoint=snakemake.wildcards.checkpoint, judge_model=judge.role.model,
                         reference_model=snakemake.params.reference_model)
write_jsonl(snakemake.output.scores, records, "judge_score")
write_json(snakemake.output.result, result, "judge_result")
write_json(snakemake.output.stats, judge.stats.as_dict(judge.role), "llm_stats")
overall = result["overall"]
pct = lambda x: "n/a" if x is None else f"{x:.1f}%"
log.info("%s: relative score %s (reference first) / %s (student first), mean %s; %d of %d questions failed",
         snakemake.wildcards.checkpoint, pct(overall["reference_first"]["relative"]),
         pct(overall["student_first"]["relative"]), pct(overall["mean_relative"]), failures, len(records))
