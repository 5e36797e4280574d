# Generation: new hard instructions modelled on hard ones, new easy ones on easy ones;
# the new instructions join the pools of the next iteration.


rule generate_instructions:
    input:
        hard=f"{ITER}/hard.jsonl",
        easy=f"{ITER}/easy.jsonl",
        cache_pool=f"{ITER}/cache_pool.jsonl",
        prompt_hard=config["llm"]["generator"]["prompt_hard"],
        prompt_easy=config["llm"]["generator"]["prompt_easy"],
        # the evaluation sets new instructions are decontaminated against: an edit reruns generation
        eval_sets=decontamination_files,
    output:
        new_hard=f"{ITER}/new_hard.jsonl",
        new_easy=f"{ITER}/new_easy.jsonl",
        rejected=f"{ITER}/rejected.jsonl",
        stats=f"{ITER}/llm_stats/generator.json",
    log:
        f"logs/{config['run']}/iter{{k}}/generate_instructions.log",
    benchmark:
        f"logs/{config['run']}/benchmarks/iter{{k}}/generate_instructions.tsv"
    # Needs the endpoint's network: on the submit host when cluster.api_rules_local is set.
    localrule: API_RULES_LOCAL
    params:
        generator=role_identity(config["llm"], "generator"),
        generation=config["generation"],
        eval_sets=decontamination_sets(),
        seed=config["seed"],
    script:
        "../workflow/scripts/generate_instructions.py"


rule update_pools:
    input:
        cache_pool=lambda wc: previous_iteration(wc, "cache_pool.jsonl"),
        new_hard=lambda wc: previous_iteration(wc, "new_hard.jsonl"),
        new_easy=lambda wc: previous_iteration(wc, "new_easy.jsonl"),
    output:
        train=f"{RESULTS}/iter{{later_k}}/train_pool.jsonl",
        cache=f"{RESULTS}/iter{{later_k}}/cache_pool.jsonl",
    log:
        f"logs/{config['run']}/iter{{later_k}}/update_pools.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    params:
        mode=config["pools"]["next_train_pool"],
    script:
        "../workflow/scripts/update_pools.py"
