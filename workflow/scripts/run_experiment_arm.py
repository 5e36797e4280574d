"""One arm of the ablation: the whole loop under the arm's config, as a nested Snakemake run."""
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lionflow.smk import setup_logging

log = setup_logging(snakemake)
arm_config = Path(snakemake.output.config)
arm_config.parent.mkdir(parents=True, exist_ok=True)
arm_config.write_text(yaml.safe_dump(snakemake.params.config, sort_keys=False), encoding="utf-8")
target = f"results/{snakemake.params.run}/summary.json"
cmd = [sys.executable, "-m", "snakemake", target, "--snakefile", snakemake.params.snakefile, "--configfile", str(arm_config),
       "--cores", str(snakemake.threads), "--rerun-incomplete", "--default-resources", "gpu=0"]
log.info("running arm: %s", " ".join(cmd))
started = time.monotonic()
with open(snakemake.log[0], "a", encoding="utf-8") as out:
    done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
if done.returncode != 0:
    raise RuntimeError(f"arm {snakemake.params.run} failed (exit {done.returncode}); see {snakemake.log[0]} and "
                       f"logs/{snakemake.params.run}/")
shutil.copyfile(target, snakemake.output.summary)
log.info("arm %s done in %.0f s", snakemake.params.run, time.monotonic() - started)
