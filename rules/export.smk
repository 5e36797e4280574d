# `snakemake export`: the distilled data (a Hugging Face datasets directory) and the final student, each
# with a card carrying the run's provenance, in results/<run>/export/ (lionflow/export.py).

EXPORT_DIR = f"{RESULTS}/export"


rule export:
    input:
        summary=f"{RESULTS}/summary.json",
        train_pools=iteration_files("train_pool.jsonl"),
        teacher_answers=iteration_files("teacher_train.jsonl"),
        student=f"{RESULTS}/iter{N_ITERATIONS}/student",
        dataset_card="resources/export/dataset_card.md.j2",
        model_card="resources/export/model_card.md.j2",
        provenance_section="resources/export/_provenance.md.j2",
    output:
        dataset=directory(f"{EXPORT_DIR}/dataset"),
        model=directory(f"{EXPORT_DIR}/model"),
    log:
        f"logs/{config['run']}/export.log",
    localrule: True  # a copy and two cards: not worth a cluster job
    params:
        license=config["export"]["license"],
        terms=config["export"]["terms"],
    script:
        "../workflow/scripts/export_run.py"
