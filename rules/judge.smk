# Open-ended evaluation (the paper's GPT-4-judged Vicuna questions): the reference model (the
# teacher by default) and every student checkpoint answer the question set; the judge scores each
# pair in both orders; relative scores per category and overall.
from lionflow.judge import role_configs

JUDGE = config["eval"]["judge"]
JUDGE_DIR = f"{RESULTS}/judge"
# The judge and reference roles, defaults filled in (the referee's judge, the teacher's answers).
JUDGE_LLM = role_configs(config["llm"], JUDGE)


# The checkpoints judged (base and every iteration's) and what the run summary reads; none when disabled.
JUDGED = (
    ["base"] + [f"iter{k}" for k in range(1, N_ITERATIONS + 1)]
    if JUDGE["enabled"]
    else []
)
JUDGE_RESULT_FILES = [f"{JUDGE_DIR}/{c}.json" for c in JUDGED]
JUDGE_STATS_FILES = [f"{JUDGE_DIR}/llm_stats/judge_{c}.json" for c in JUDGED] + (
    [f"{JUDGE_DIR}/llm_stats/reference.json"] if JUDGED else []
)


rule answer_questions_with_reference:
    input:
        questions=JUDGE["questions"],
        prompt=JUDGE_LLM["reference"]["prompt"],
    output:
        answers=f"{JUDGE_DIR}/reference_answers.jsonl",
        stats=f"{JUDGE_DIR}/llm_stats/reference.json",
    log:
        f"logs/{config['run']}/judge/answer_questions_with_reference.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/judge/answer_questions_with_reference.tsv"
    # Needs the endpoint's network: on the submit host when cluster.api_rules_local is set.
    localrule: API_RULES_LOCAL
    params:
        reference=role_identity(JUDGE_LLM, "reference"),
        limit=JUDGE["limit"],
    script:
        "../workflow/scripts/answer_questions_with_reference.py"


rule answer_questions_with_student:
    input:
        questions=JUDGE["questions"],
        student=checkpoint_dir,
    output:
        answers=f"{JUDGE_DIR}/{{checkpoint}}_answers.jsonl",
    log:
        f"logs/{config['run']}/judge/answer_questions_with_student_{{checkpoint}}.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/judge/answer_questions_with_student_{{checkpoint}}.tsv"
    threads: TORCH_THREADS
    params:
        generate=config["student"]["generate"],
        device=config["student"]["device"],
        seed=config["seed"],
        limit=JUDGE["limit"],
    script:
        "../workflow/scripts/answer_questions_with_student.py"


rule judge_answers:
    input:
        questions=JUDGE["questions"],
        reference=f"{JUDGE_DIR}/reference_answers.jsonl",
        student=f"{JUDGE_DIR}/{{checkpoint}}_answers.jsonl",
        prompt=JUDGE["prompt"],
    output:
        scores=f"{JUDGE_DIR}/{{checkpoint}}_scores.jsonl",
        result=f"{JUDGE_DIR}/{{checkpoint}}.json",
        stats=f"{JUDGE_DIR}/llm_stats/judge_{{checkpoint}}.json",
    log:
        f"logs/{config['run']}/judge/judge_answers_{{checkpoint}}.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/judge/judge_answers_{{checkpoint}}.tsv"
    # Needs the endpoint's network: on the submit host when cluster.api_rules_local is set.
    localrule: API_RULES_LOCAL
    params:
        judge=role_identity(JUDGE_LLM, "judge"),
        reference_model=JUDGE_LLM["reference"]["model"],
        limit=JUDGE["limit"],
        parse_retries=JUDGE["parse_retries"],
    script:
        "../workflow/scripts/judge_answers.py"
