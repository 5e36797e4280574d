"""lm-eval on one student checkpoint (base or an iteration's), at a fixed output path."""
import torch

from lionflow.artifacts import write_json
from lionflow.evaluation import run_lm_eval
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.lm_eval
metrics, groups = run_lm_eval(snakemake.input.student, cfg["tasks"], include_path=cfg["include_path"],
                              out_json=snakemake.output.details, batch_size=cfg["batch_size"], limit=cfg["limit"],
                              device=snakemake.params.device)
write_json(snakemake.output.metrics, {"model_dir": snakemake.input.student, "metrics": metrics, "groups": groups},
           "eval_metrics")
log.info("%s: %s", snakemake.wildcards.checkpoint, metrics)
