"""Full fine-tuning vs LoRA on the micro run: trainable parameters, peak memory, time.

    python benchmarks/lora.py                                    # tests/micro/config.yaml's student (builtin:tiny)
    python benchmarks/lora.py --base-model models/SmolLM2-135M-Instruct.Q4_1.gguf   # the real pretrained student
    python benchmarks/lora.py --smoke      # 4 examples, 1 epoch: both arms, the same JSON keys

Both arms train the same student on the same data (the micro seed instructions answered by the
embedded oracle as teacher) with the config's `student.train` settings, through the training
rule's own command (`accelerate launch -m lionflow.student.train`, one CPU process, or the job's
GPU); the LoRA arm adds `student.train.lora` with `enabled: true` (the schema's r, alpha, dropout
and target modules unless --lora-json overrides them). Figures come from each run's
training_log.json: trainable / total parameters, the training process's peak RSS (VmHWM) at the
end of the training loop (model, optimizer state, activations) and at the end of the job (the
final save and, for LoRA, the merge into a fresh copy of the model), on a GPU torch's peak
allocated memory, and the training loop's and the whole job's wall time. Prints a table, then one JSON
line, also when a stage fails (`failed_stage`: benchmarks/stages.py).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages import Stages
from tabulate import tabulate
from workflow_config import load_config

from lionflow.artifacts import read_jsonl, write_jsonl
from lionflow.imitation import teacher_answers
from lionflow.prompts import PromptTemplate
from lionflow.smk import llm_for
from lionflow.student.builtin import resolve_base_model

ROOT = Path(__file__).resolve().parents[1]
run = Stages("lora")


def train(base: Path, data: Path, out: Path, train_config: dict) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lionflow.student.train", "--init", str(base),
           "--data", str(data), "--out", str(out), "--config-json", json.dumps(train_config)]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if proc.returncode:
        raise SystemExit(f"training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    log = json.loads((out / "training_log.json").read_text())
    return {"method": log["method"], "trainable_parameters": log["trainable_parameters"],
            "total_parameters": log["total_parameters"], "trainable_percent": log["trainable_percent"],
            "peak_rss_mib": log["peak_rss_mib"], "peak_gpu_memory_mib": log["peak_gpu_memory_mib"],
            "job_peak_rss_mib": log["job_peak_rss_mib"],
            "train_s": log["wall_time_s"], "job_s": round(time.time() - t0, 1),
            "optimizer_steps": log["optimizer_steps"], "first_loss": round(log["steps"][0]["loss"], 4),
            "final_loss": round(log["final_loss"], 4)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "tests" / "micro" / "config.yaml"))
    p.add_argument("--base-model", help="overrides student.base_model (e.g. a .gguf file)")
    p.add_argument("--lora-json", default="{}", help="overrides of student.train.lora for the LoRA arm")
    p.add_argument("--train-json", default="{}", help="overrides of student.train for both arms")
    p.add_argument("--examples", type=int, help="train on the first N seed instructions only")
    args = run.parse(p, smoke=dict(examples=4, train_json='{"epochs": 1}'))
    run.stage("setup")
    config = load_config(args.config)
    os.chdir(ROOT)  # the config's paths are relative to the project
    spec = args.base_model or config["student"]["base_model"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = resolve_base_model(spec, tmp / "base", seed=config["seed"],
                                  chat_template=config["student"]["chat_template"])
        pool = [{**r, "input": r.get("input", "")} for r in read_jsonl(config["data"]["seed_instructions"],
                                                                     "seed_instruction")][:args.examples]
        llm = {**config["llm"], "cache_dir": str(tmp / "cache"), "ledger_dir": str(tmp / "ledger")}
        answers, _ = teacher_answers(llm_for({**config, "llm": llm}, "teacher"), PromptTemplate.load(config["llm"]["teacher"]["prompt"]),
                                     pool, max_failure_rate=0.0)
        write_jsonl(tmp / "data.jsonl", answers, "answer")
        train_config = {**config["student"]["train"], **json.loads(args.train_json), "seed": config["seed"],
                        "checkpoint_every_steps": 0}
        lora = {**config["student"]["train"]["lora"], **json.loads(args.lora_json), "enabled": True}
        run.figures |= {"student": spec, "examples": len(answers), "lora_config": lora}
        rows = {}
        run.stage("full")
        rows["full"] = run.figures["full"] = train(base, tmp / "data.jsonl", tmp / "full",
                                                   {**train_config, "lora": None})
        run.stage("lora")
        rows["lora"] = run.figures["lora"] = train(base, tmp / "data.jsonl", tmp / "lora",
                                                   {**train_config, "lora": lora})
    head = ["method", "trainable params", "total params", "trainable %", "peak RSS MiB (training)",
            "peak RSS MiB (job)", "peak GPU MiB", "train s", "job s", "steps", "first loss", "final loss"]
    keys = ["method", "trainable_parameters", "total_parameters", "trainable_percent", "peak_rss_mib",
            "job_peak_rss_mib", "peak_gpu_memory_mib", "train_s", "job_s", "optimizer_steps", "first_loss",
            "final_loss"]
    print(f"student {spec}, {len(answers)} examples, student.train {json.dumps(train_config)}; LoRA {json.dumps(lora)}")
    print(tabulate([[r[k] if r[k] is not None else "-" for k in keys] for r in rows.values()], headers=head,
                   tablefmt="github", intfmt=","))


if __name__ == "__main__":
    run.main(main)
