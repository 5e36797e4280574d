"""Start-up: a parse of the workflow preflights each run once and reads a base model's file at most once,
whatever the model; the main run's parse does not load the experiment's arms (benchmarks/startup.py
times it)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

# snakemake's command line in a process that counts the calls of what a parse must do at most once:
# preflight (per run), the one full read of a GGUF file (lionflow.student.facts.read_gguf) and every
# GGUF file opened by any library (gguf.GGUFReader, which transformers uses to load a tokenizer).
COUNTING_SNAKEMAKE = """
import atexit, collections, json, sys
import gguf
import lionflow.preflight, lionflow.student.facts

calls = collections.Counter()

def counted(name, function):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return function(*args, **kwargs)
    return wrapper

lionflow.preflight.preflight = counted("preflight", lionflow.preflight.preflight)
lionflow.student.facts.read_gguf = counted("read_gguf", lionflow.student.facts.read_gguf)
gguf.GGUFReader.__init__ = counted("GGUFReader", gguf.GGUFReader.__init__)
atexit.register(lambda: print("CALLS " + json.dumps(calls), file=sys.stderr))
from snakemake.cli import main
sys.argv = ["snakemake", *sys.argv[1:]]
main()
"""


def counted_dry_run(workdir, *args) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", COUNTING_SNAKEMAKE, "-n", "--cores", "2", *args], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"preflight": 0, "read_gguf": 0, "GGUFReader": 0,
            **json.loads(proc.stderr.rsplit("CALLS ", 1)[1].splitlines()[0])}


@pytest.fixture
def workflow_with_smollm2(tmp_path):
    assert GGUF.is_file(), "make smollm2 (make test does) fetches it"
    for name in ("Snakefile", "experiment.smk", "rules", "workflow", "config", "resources"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / GGUF.name).symlink_to(GGUF)
    return tmp_path


def test_a_parse_preflights_each_run_once_and_reads_the_model_once(workflow_with_smollm2):
    smollm2 = ("--configfile", "config/smollm2.yaml")
    # The first parse ever reads the GGUF file once (tokenizer and context length), and keeps what it read.
    assert counted_dry_run(workflow_with_smollm2, *smollm2) == {"preflight": 1, "read_gguf": 1, "GGUFReader": 1}
    kept = list((workflow_with_smollm2 / ".cache/lionflow/model-facts").glob("*/facts.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == {"context_length": 8192}
    # Every later parse reads it no more.
    assert counted_dry_run(workflow_with_smollm2, *smollm2) == {"preflight": 1, "read_gguf": 0, "GGUFReader": 0}
    # The experiment: one preflight per run (the seeds' shared runs and both arms of each), no model read.
    (workflow_with_smollm2 / "exp.yaml").write_text("experiment: {name: e, seeds: [0, 1]}\n")
    experiment = ("-s", "experiment.smk", "--configfile", "config/smollm2.yaml", "exp.yaml")
    assert counted_dry_run(workflow_with_smollm2, *experiment) == {"preflight": 6, "read_gguf": 0, "GGUFReader": 0}


def test_a_replaced_model_file_is_read_again(workflow_with_smollm2):
    smollm2 = ("--configfile", "config/smollm2.yaml")
    assert counted_dry_run(workflow_with_smollm2, *smollm2)["read_gguf"] == 1
    model = workflow_with_smollm2 / "models" / GGUF.name
    model.unlink()
    shutil.copy(GGUF, model)   # the same bytes, a new file: its size or time may differ, so it is read again
    assert counted_dry_run(workflow_with_smollm2, *smollm2)["read_gguf"] == 1


def test_the_main_run_does_not_load_the_experiment(workflow_with_smollm2):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=workflow_with_smollm2,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = proc.stdout.split()
    assert "train_student" in rules and not any(r.startswith(("shared_s", "uniform_s", "adversarial_s")) for r in rules)
    assert "experiment" not in rules and "tabulate_ablation" not in rules
