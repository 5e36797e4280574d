# Evaluation: lm-eval on the base student and on every iteration's checkpoint (the judge's
# open-ended evaluation is in judge.smk); the run summary.


rule evaluate_student:
    input:
        student=checkpoint_dir,
        tasks=lm_eval_task_files,
    output:
        metrics=f"{RESULTS}/eval/{{checkpoint}}.json",
        details=f"{RESULTS}/eval/{{checkpoint}}_lm_eval.json",
    log:
        f"logs/{config['run']}/evaluate_student_{{checkpoint}}.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/evaluate_student_{{checkpoint}}.tsv"
    threads: TORCH_THREADS
    params:
        lm_eval=config["eval"]["lm_eval"],
        device=config["student"]["device"],
    script:
        "../workflow/scripts/evaluate_student.py"


rule summarize_run:
    input:
        train_pools=iteration_files("train_pool.jsonl"),
        cache_pools=iteration_files("cache_pool.jsonl"),
        scores=iteration_files("referee_scores.jsonl"),
        hard=iteration_files("hard.jsonl"),
        easy=iteration_files("easy.jsonl"),
        new_hard=iteration_files("new_hard.jsonl"),
        new_easy=iteration_files("new_easy.jsonl"),
        rejected=iteration_files("rejected.jsonl"),
        # one list per LLM stage, in iteration order (lionflow.layout.LLM_STAGES)
        llm_teacher_train=iteration_files("llm_stats/teacher_train.json"),
        llm_teacher_cache=iteration_files("llm_stats/teacher_cache.json"),
        llm_referee=iteration_files("llm_stats/referee.json"),
        llm_generator=iteration_files("llm_stats/generator.json"),
        base_eval=f"{RESULTS}/eval/base.json",
        iteration_evals=expand(
            f"{RESULTS}/eval/iter{{k}}.json", k=range(1, N_ITERATIONS + 1)
        ),
        judge_results=JUDGE_RESULT_FILES,
        judge_stats=JUDGE_STATS_FILES,
    output:
        summary=f"{RESULTS}/summary.json",
    log:
        f"logs/{config['run']}/summarize_run.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    params:
        threshold=config["discrimination"]["threshold"],
        min_order_agreement=config["discrimination"]["min_order_agreement"],
        hard_fraction_band=config["discrimination"]["hard_fraction_band"],
    script:
        "../workflow/scripts/summarize_run.py"
