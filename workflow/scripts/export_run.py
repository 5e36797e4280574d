"""results/<run>/export/: the distilled dataset and the final student, with their cards."""
from lionflow.artifacts import read_json
from lionflow.export import export_run
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
i = snakemake.input
done = export_run(read_json(i.summary, "summary"), train_pools=i.train_pools, teacher_answers=i.teacher_answers,
                  student_dir=i.student, out_dataset=snakemake.output.dataset, out_model=snakemake.output.model,
                  dataset_card=i.dataset_card, model_card=i.model_card, license=snakemake.params.license,
                  terms=snakemake.params.terms)
log.info("exported %d rows (%s) and the student (%s, %d parameters) to %s, %s", done["rows"], done["origins"],
         done["architecture"], done["parameters"], snakemake.output.dataset, snakemake.output.model)
