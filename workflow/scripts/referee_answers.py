"""The referee scores each (teacher, student) answer pair in both orders."""
from lionflow.artifacts import read_jsonl, write_json, write_jsonl
from lionflow.discrimination import failed_verdicts, score_pairs
from lionflow.failures import check_failure_rate
from lionflow.smk import llm_for, setup_logging, template

log = setup_logging(snakemake)
teacher = read_jsonl(snakemake.input.teacher, "answer")
student = read_jsonl(snakemake.input.student, "answer")
referee = llm_for(snakemake.config, "referee")
records = score_pairs(referee, template(snakemake.input.prompt), teacher, student,
                      parse_retries=snakemake.params.referee["parse_retries"])
failures = check_failure_rate("referee", "pair", failed_verdicts(records), len(records),
                              snakemake.config["discrimination"]["max_referee_failure_rate"],
                              "discrimination.max_referee_failure_rate")
write_jsonl(snakemake.output.scores, records, "referee_score")
write_json(snakemake.output.stats, referee.stats.as_dict(referee.role), "llm_stats")
log.info("referee: %d pairs, %d failures; %s", len(records), failures, referee.stats)
