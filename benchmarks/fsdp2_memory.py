"""Per-process memory of FSDP2 training on CPU processes: one plain process against N sharded ones.

    python benchmarks/fsdp2_memory.py                   # SmolLM2-135M's architecture, all 30 layers
    python benchmarks/fsdp2_memory.py --layers 2 --processes 2
    python benchmarks/fsdp2_memory.py --smoke           # 1 layer, 1 step: both launches, the same JSON keys

Trains SmolLM2-135M's architecture (random weights, byte-level tokenizer) for a few optimizer steps
through the training rule's command: one process as the CPU rule launches it, then N processes as
the GPU rule does (`--config_file config/accelerate/gpus.yaml --num_processes N`, here over gloo).
Prints, per run, the parameters + gradients + AdamW state each process holds (training_log.json's
`state_memory`), the peak RSS of process 0 and the losses; the last line is one JSON object, also when
a launch fails (`failed_stage`: benchmarks/stages.py).
tests/test_fsdp2.py asserts the halving on 2 of the 30 layers; this measures the whole model.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from stages import Stages  # noqa: E402
from workflow_config import train_settings  # noqa: E402

from gpu_check import SMOLLM2_135M, build_student  # noqa: E402

run = Stages("fsdp2_memory")

WORDS4 = "lion wolf bear frog bird fish duck goat crab deer".split()  # one length: the same loss however grouped


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=SMOLLM2_135M["num_hidden_layers"])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    a = run.parse(p, smoke=dict(layers=1, steps=1), argv=argv)
    run.stage("setup")
    tmp = Path(tempfile.mkdtemp(prefix="fsdp2-memory-"))
    build_student(tmp / "init", {**SMOLLM2_135M, "num_hidden_layers": a.layers}, seq_len=256)
    batch = 4 * a.processes
    with open(tmp / "data.jsonl", "w") as f:
        for i in range(a.steps * batch):
            w = WORDS4[i % len(WORDS4)]
            f.write(json.dumps({"id": f"q{i}", "instruction": f"Write '{w}' in uppercase letters.", "input": "",
                                "answer": w.upper(), "model": "t", "finish_reason": "stop"}) + "\n")
    cfg = train_settings(epochs=1, learning_rate=1e-3, warmup_ratio=0.0, max_length=256, effective_batch_size=batch,
                         per_device_batch_size=2, checkpoint_every_steps=0)
    launches = {1: ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
                a.processes: ["--config_file", str(ROOT / "config/accelerate/gpus.yaml"), "--num_processes",
                              str(a.processes)]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    runs = {}
    for n, args in launches.items():
        run.stage(f"train_{n}_process{'es' if n > 1 else ''}")
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *args, "-m", "lionflow.student.train",
                        "--init", str(tmp / "init"), "--data", str(tmp / "data.jsonl"), "--out", str(tmp / f"p{n}"),
                        "--config-json", json.dumps(cfg), "--log-every", "1"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = json.loads((tmp / f"p{n}" / "training_log.json").read_text())
        runs[n] = {"sharding": log["sharding"]["method"], "state_mib_per_process": log["state_memory"]["per_rank"],
                   "peak_rss_mib_process_0": log["peak_rss_mib"], "training_loop_s": log["wall_time_s"],
                   "launch_s": round(time.time() - t0, 1), "losses": [s["loss"] for s in log["steps"]]}
        print(f"{n} process(es), {runs[n]['sharding']}: state per process "
              f"{[r['total_mib'] for r in runs[n]['state_mib_per_process']]} MiB, peak RSS of process 0 "
              f"{runs[n]['peak_rss_mib_process_0']} MiB, losses {[round(x, 5) for x in runs[n]['losses']]}", flush=True)
    one, many = runs[1], runs[a.processes]
    run.figures |= {"layers": a.layers, "parameters": log["total_parameters"], "processes": a.processes,
                    "state_ratio": round(many["state_mib_per_process"][0]["total_mib"]
                                         / one["state_mib_per_process"][0]["total_mib"], 4),
                    "max_loss_diff": max(abs(x - y) for x, y in zip(one["losses"], many["losses"])), "runs": runs}


if __name__ == "__main__":
    run.main(main)
