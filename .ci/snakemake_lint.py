"""`snakemake --lint`, failing on every lint except the ones this workflow makes on purpose:

- "Specify a conda environment or container for each rule": the workflow runs in the project's
  venv (`make venv`, pinned by requirements.lock), vLLM in its own (`make vllm`); there are no
  conda environments to name.
- "Shell command directly uses variable PYTHON / CHECKPOINT_EVERY_STEPS": train_student runs
  `accelerate launch` with the interpreter running Snakemake and the checkpoint interval. As
  params they would rerun training whenever the venv's path or the interval changes, and neither
  changes the trained model.
"""
import re
import subprocess
import sys

ALLOWED = (
    "Specify a conda environment or container for each rule.",
    "Shell command directly uses variable PYTHON from outside of the rule",
    "Shell command directly uses variable CHECKPOINT_EVERY_STEPS from outside of the rule",
)

for snakefile in ("Snakefile", "experiment.smk"):  # the entry points
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", snakefile, "--lint"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    lints = re.findall(r"^\s+\* (.+?):?$", text, re.M)
    unexpected = [lint for lint in lints if not lint.rstrip(":").startswith(ALLOWED)]
    if unexpected or (out.returncode and not lints):
        print(text)
        sys.exit(f"snakemake --lint {snakefile}: {len(unexpected)} unexpected lint(s): {sorted(set(unexpected))}")
    print(f"snakemake --lint {snakefile}: clean but for {len(lints)} deliberate lint(s) (see .ci/snakemake_lint.py)")
