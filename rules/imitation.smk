# Imitation: the teacher answers the train pool; the student is fine-tuned on those answers.


rule init_pools:
    input:
        seeds=config["data"]["seed_instructions"],
    output:
        train=f"{RESULTS}/iter1/train_pool.jsonl",
        cache=f"{RESULTS}/iter1/cache_pool.jsonl",
    log:
        f"logs/{config['run']}/iter1/init_pools.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    script:
        "../workflow/scripts/init_pools.py"


rule answer_with_teacher:
    input:
        pool=f"{ITER}/{{pool}}_pool.jsonl",
        prompt=config["llm"]["teacher"]["prompt"],
    output:
        answers=f"{ITER}/teacher_{{pool}}.jsonl",
        stats=f"{ITER}/llm_stats/teacher_{{pool}}.json",
    log:
        f"logs/{config['run']}/iter{{k}}/answer_with_teacher_{{pool}}.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/iter{{k}}/answer_with_teacher_{{pool}}.tsv"
    # Needs the endpoint's network: on the submit host when cluster.api_rules_local is set.
    localrule: API_RULES_LOCAL
    params:
        # what changes the answers, nothing else (the script reads prices, budget, cache from config)
        teacher=role_identity(config["llm"], "teacher"),
    script:
        "../workflow/scripts/answer_with_teacher.py"


rule build_base_student:
    input:
        # a forced chat template is an input: editing it rebuilds the student and what follows
        chat_template=(
            []
            if config["student"]["chat_template"] == "auto"
            else config["student"]["chat_template"]
        ),
    output:
        directory(f"{RESULTS}/base_student"),
    log:
        f"logs/{config['run']}/build_base_student.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/build_base_student.tsv"
    params:
        base_model=config["student"]["base_model"],
        chat_template=config["student"]["chat_template"],
        seed=config["seed"],
    script:
        "../workflow/scripts/build_base_student.py"


# How often the resumable state is saved changes no weight: not a param (editing it retrains nothing;
# CHECKPOINT_EVERY_STEPS, rules/shell.smk); nor do the LoRA settings while LoRA is off.
TRAIN_PARAMS = {
    **{
        k: v
        for k, v in config["student"]["train"].items()
        if k != "checkpoint_every_steps"
    },
    "lora": (
        config["student"]["train"]["lora"]
        if config["student"]["train"]["lora"]["enabled"]
        else None
    ),
}


rule train_student:
    input:
        init=student_init,
        data=f"{ITER}/teacher_train.jsonl",
        accelerate_config="config/accelerate/gpus.yaml",
    output:
        directory(f"{ITER}/student"),
    log:
        f"logs/{config['run']}/iter{{k}}/train_student.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/iter{{k}}/train_student.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=0,
    params:
        train=lambda wc: json.dumps(
            {**TRAIN_PARAMS, "seed": config["seed"] + int(wc.k)}
        ),
        launch=accelerate_launch_args,
        device=config["student"]["device"],
        # Not an output: Snakemake keeps it when a job dies, so a rerun resumes from it.
        state_dir=f"{ITER}/student.resume",
    shell:
        "OMP_NUM_THREADS={threads} {PYTHON} -m accelerate.commands.launch {params.launch} -m lionflow.student.train"
        " --init {input.init} --data {input.data} --out {output} --state-dir {params.state_dir}"
        " --device {params.device} --checkpoint-every-steps {CHECKPOINT_EVERY_STEPS}"
        " --config-json {params.train:q} > {log} 2>&1"
