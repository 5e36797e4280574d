"""What LoRA dropout costs a training step: dropout p against 0, interleaved in one process.

    python benchmarks/lora_dropout.py                      # SmolLM2-135M-Instruct (models/), batch 8 x 96 tokens
    python benchmarks/lora_dropout.py --profile            # and torch.profiler's top operators of one step each
    python benchmarks/lora_dropout.py --smoke              # tiny built student: seconds, the same JSON keys

Two copies of the same student wrapped by lionflow's LoRA (`lionflow.student.lora.load_for_training`,
the schema's r 16, alpha 32, all-linear) that differ only in `dropout`; their optimizer steps
(forward, backward, fused AdamW over the adapters, as the training loop runs them) alternate, so a
machine shared with other jobs slows both alike. Prints seconds per step of each, their ratio,
and with --profile the self CPU time of the operators that dropout adds (bernoulli_, the mask
multiplications). The last stdout line is one JSON object.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from stages import Stages

ROOT = Path(__file__).resolve().parents[1]
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
run = Stages("lora_dropout")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(GGUF), help="a .gguf file, builtin:tiny or a model directory")
    p.add_argument("--dropout", type=float, default=0.05, help="the dropout compared with 0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=96, help="tokens per sequence (the last third trained)")
    p.add_argument("--steps", type=int, default=3, help="timed steps of each, after one untimed")
    p.add_argument("--profile", action="store_true")
    a = run.parse(p, smoke=dict(model="builtin:tiny", batch=2, length=32, steps=2))
    run.stage("setup")
    import torch

    from lionflow.student import lora as lora_
    from lionflow.student.builtin import resolve_base_model
    from lionflow.student.train import loss_of, projects_trained_positions_only

    load = os.getloadavg()[0]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="lora-dropout-") as tmp:
        base = resolve_base_model(a.model, Path(tmp) / "base", seed=0, chat_template="auto")
        arms = {}
        for p_ in (a.dropout, 0.0):
            settings = lora_.LoraSettings(r=16, alpha=32, dropout=p_, target_modules="all-linear", load_in_4bit=False)
            model = lora_.load_for_training(base, settings, "cpu").train()
            opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4, fused=True)
            arms[p_] = (model, opt)
        vocab = next(iter(arms.values()))[0].config.vocab_size
    ids = torch.randint(3, vocab, (a.batch, a.length))
    labels = ids.clone()
    labels[:, : 2 * a.length // 3] = -100
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}

    def step(model, opt):
        t = time.perf_counter()
        loss_of(model, batch, projects_trained_positions_only(model)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    run.stage("steps")
    for arm in arms.values():
        step(*arm)
    times = {p_: [] for p_ in arms}
    for _ in range(a.steps):
        for p_, arm in arms.items():
            times[p_].append(step(*arm))
    result = {"model": a.model, "smoke": a.smoke, "batch": a.batch, "length": a.length,
              "load_average_1min": round(load, 2),
              "step_s": {f"dropout_{p_:g}": [round(t, 3) for t in ts] for p_, ts in times.items()},
              "median_ratio": round(statistics.median(times[a.dropout]) / statistics.median(times[0.0]), 3),
              "dropout_ops_self_cpu_share": None}
    if a.profile:
        run.stage("profile")
        from torch.profiler import ProfilerActivity, profile

        shares = {}
        for p_, arm in arms.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(*arm)
            ops = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in ops)
            print(f"dropout {p_:g}:\n" + ops.table(sort_by="self_cpu_time_total", row_limit=10))
            shares[f"dropout_{p_:g}"] = {e.key: round(e.self_cpu_time_total / total, 4) for e in ops
                                         if e.key in ("aten::bernoulli_", "aten::mul", "aten::native_dropout",
                                                      "aten::native_dropout_backward")}
        result["dropout_ops_self_cpu_share"] = shares
    result["load_average_1min"] = [result["load_average_1min"], round(os.getloadavg()[0], 2)]
    print(f"LoRA step s: {json.dumps(result['step_s'])}; dropout {a.dropout:g} / 0 (median): {result['median_ratio']}")
    return result


if __name__ == "__main__":
    run.main(main)
