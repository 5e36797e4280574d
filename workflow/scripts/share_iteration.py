"""An ablation arm's iteration 1 (and base student): fresh copies of its seed's shared run's files."""
import shutil
from pathlib import Path

from lionflow.smk import setup_logging

log = setup_logging(snakemake)
for src, dst in zip(snakemake.input, snakemake.output, strict=True):
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    # copyfile, not copy2 or a hard link: a copy newer than every input keeps the job up to date
    if Path(src).is_dir():
        shutil.copytree(src, dst, copy_function=shutil.copyfile, dirs_exist_ok=True)
    else:
        shutil.copyfile(src, dst)
log.info("copied %d paths from %s", len(snakemake.output), Path(snakemake.input[0]).parents[1])
