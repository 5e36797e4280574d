# Discrimination: the student answers the cache pool (the teacher's answers come from
# answer_with_teacher); the referee scores both in both orders; the split gives hard and easy.


rule answer_with_student:
    input:
        pool=f"{ITER}/cache_pool.jsonl",
        student=f"{ITER}/student",
    output:
        answers=f"{ITER}/student_cache.jsonl",
    log:
        f"logs/{config['run']}/iter{{k}}/answer_with_student.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/iter{{k}}/answer_with_student.tsv"
    threads: TORCH_THREADS
    params:
        generate=config["student"]["generate"],
        device=config["student"]["device"],
        seed=config["seed"],
    script:
        "../workflow/scripts/answer_with_student.py"


rule referee_answers:
    input:
        teacher=f"{ITER}/teacher_cache.jsonl",
        student=f"{ITER}/student_cache.jsonl",
        prompt=config["llm"]["referee"]["prompt"],
    output:
        scores=f"{ITER}/referee_scores.jsonl",
        stats=f"{ITER}/llm_stats/referee.json",
    log:
        f"logs/{config['run']}/iter{{k}}/referee_answers.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/iter{{k}}/referee_answers.tsv"
    # Needs the endpoint's network: on the submit host when cluster.api_rules_local is set.
    localrule: API_RULES_LOCAL
    params:
        referee=role_identity(config["llm"], "referee"),
    script:
        "../workflow/scripts/referee_answers.py"


rule split_hard_easy:
    input:
        scores=f"{ITER}/referee_scores.jsonl",
    output:
        hard=f"{ITER}/hard.jsonl",
        easy=f"{ITER}/easy.jsonl",
    log:
        f"logs/{config['run']}/iter{{k}}/split_hard_easy.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    params:
        threshold=config["discrimination"]["threshold"],
    script:
        "../workflow/scripts/split_hard_easy.py"
