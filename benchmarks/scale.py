"""Paper-scale figures of the data stages and of student generation (issue 6), on this machine.

1. dedup: ROUGE-L > 0.7 filter of 6,000 candidates against a 70,000-instruction pool
   (benchmarks/dedup_speed.py's corpus), and brute force with the rouge_score package, which
   is TIMED ON A SAMPLE of candidates and EXTRAPOLATED to all of them (hours otherwise).
2. generation: the tiny student (build_tiny_student defaults, greedy, untrained so every
   answer runs to max_new_tokens) answers prompts batched (all of them, through
   lionflow.student.generate: length-sorted, left-padded batches) and one at a time (a random
   sample of the same prompts, `model.generate` per prompt as the paper's code does, with each
   attention kernel), side by side in this run, in each dtype; throughput in answers/s. Each
   speed-up is against the FASTEST batch-1 configuration.
3. pool stages: time, peak RSS and peak anonymous memory of init pools, update pools (+6,000 new), the hard/easy
   split, and a whole-list artifact read + write, on synthetic pools of the oracle's task
   families; each measured in its own subprocess, so its peak RSS is its own.
4. snakemake -n: a throwaway copy of the working tree with `iterations=10`, every output
   created as a placeholder (a checkpoint directory: the files the preflight looks for, empty) and
   marked done with `snakemake --touch`; median of 3 dry runs.

Usage: python benchmarks/scale.py [--sizes 70000,700000] [--brute-sample 3] [--gen-prompts 1024]
       python benchmarks/scale.py --smoke     # tiny sizes, every stage, the same JSON keys (~20 s)
The last line printed is one JSON object with every figure (`dedup_s` among them), also when a stage
fails (`failed_stage`: benchmarks/stages.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages import Stages

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
N_NEW = 6000  # new instructions per iteration in the paper (3K hard + 3K easy)
# A checkpoint directory's placeholder: one file for each thing lionflow.preflight.check_checkpoints
# looks for (config, weights, tokenizer), empty; nothing in a dry run reads them.
CHECKPOINT_PLACEHOLDER = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
run = Stages("scale")


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------- 1. dedup

def bench_dedup(n_pool: int, n_cands: int, brute_sample: int) -> dict:
    from rouge_score import rouge_scorer

    from lionflow.dedup import filter_near_duplicates

    from dedup_speed import make_corpus

    pool, cands = make_corpus(n_pool, n_cands)
    t0 = time.perf_counter()
    decisions = filter_near_duplicates(cands, pool)
    dedup_s = time.perf_counter() - t0

    # Brute force as the paper's code does it: every candidate scored against the whole pool
    # plus the candidates kept before it. Timed on a sample, extrapolated to all candidates.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sample = random.Random(1).sample(range(n_cands), brute_sample)
    per_candidate = []
    for i in sample:
        refs = pool + [c for c, d in zip(cands[:i], decisions[:i]) if d.kept]
        t0 = time.perf_counter()
        best = max(scorer.score(cands[i], r)["rougeL"].fmeasure for r in refs)
        per_candidate.append(time.perf_counter() - t0)
        assert best == decisions[i].max_similarity, (i, best, decisions[i])  # identical decisions
    brute_s = statistics.mean(per_candidate) * n_cands
    rejected = sum(not d.kept for d in decisions)
    table(f"dedup: {n_cands:,} candidates x {n_pool:,} pool, ROUGE-L > 0.7", ["method", "seconds", "note"], [
        ["lionflow.dedup (exact, pruned)", f"{dedup_s:.2f}", f"rejected {rejected} ({100 * rejected / n_cands:.1f} %)"],
        ["rouge_score brute force", f"{brute_s:,.0f}",
         f"EXTRAPOLATED from {brute_sample} sampled candidates ({statistics.mean(per_candidate):.2f} s each); "
         "same max similarity on each"],
    ])
    return {"dedup_s": round(dedup_s, 2), "dedup_brute_force_s_extrapolated": round(brute_s),
            "dedup_brute_force_sample": brute_sample, "dedup_speedup": round(brute_s / dedup_s),
            "dedup_rejected": rejected}


# ---------------------------------------------------------------- 2. generation

def one_at_a_time(model_dir, items: list[dict], max_new: int, dtype: str, attn: str) -> list[dict]:
    """The paper's way: `model.generate` on one prompt at a time (same prompts, same greedy decoding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lionflow.student.generate import decode_answer
    from lionflow.student.prompting import ensure_chat_template, prompt_text

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the device generate_answers picks
    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype),
                                                 attn_implementation=attn).to(device).eval()
    answers = []
    for it in items:
        enc = tokenizer(prompt_text(tokenizer, it["instruction"], it["input"]), return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers.append(decode_answer(tokenizer, out[0, enc.input_ids.shape[1]:].tolist()))
    return answers


def bench_generation(n_prompts: int, n_single: int, new_tokens: list[int], batch_sizes: list[int],
                     dtypes: list[str], threads: int) -> dict:
    import torch
    from workflow_config import generate_config

    from lionflow.oracle.datasets import make_synthetic_pool
    from lionflow.student.builtin import build_tiny_student
    from lionflow.student.generate import generate_answers

    torch.set_num_threads(threads)
    items = list(make_synthetic_pool(n_prompts, seed=3))
    sample = sorted(random.Random(0).sample(range(n_prompts), n_single))  # the one-at-a-time prompts
    rows, figures = [], {}
    run.figures["generation"] = figures  # filled as measured: a failure or a kill (SIGTERM) keeps what was
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_student(Path(tmp) / "tiny", seed=0)
        for max_new in new_tokens:
            cfg = lambda bs, dtype, max_new=max_new: generate_config(max_new_tokens=max_new, temperature=0.0,
                                                                     batch_size=bs, dtype=dtype)
            single, one = {}, {}
            # Batch 1 first, in every dtype and attention kernel, so that each batched figure is set
            # against the fastest one-at-a-time configuration, not a strawman.
            for dtype in dtypes:
                for attn in ("sdpa", "eager"):
                    one_at_a_time(model_dir, items[:2], 4, dtype, attn)  # warm-up
                    t0 = time.perf_counter()
                    one[dtype, attn] = one_at_a_time(model_dir, [items[i] for i in sample], max_new, dtype, attn)
                    single[dtype, attn] = n_single / (time.perf_counter() - t0)
                    figures[f"new{max_new}_{dtype}_{attn}_bs1"] = {"answers_per_s": round(single[dtype, attn], 2)}
                    rows.append([max_new, dtype, f"1 ({attn})", f"{single[dtype, attn]:.1f}", "", "",
                                 f"model.generate per prompt, {n_single} sampled prompts"])
            fastest_single = max(single.values())
            for dtype in dtypes:
                reference = one[max((k for k in single if k[0] == dtype), key=single.get)]
                for bs in batch_sizes:
                    generate_answers(model_dir, items[:4], cfg(4, dtype), device="cpu")  # warm-up
                    t0 = time.perf_counter()
                    answers = generate_answers(model_dir, items, cfg(bs, dtype), device="cpu")
                    rate = n_prompts / (time.perf_counter() - t0)
                    same_dtype = max(v for k, v in single.items() if k[0] == dtype)
                    same = sum(answers[i] == a for i, a in zip(sample, reference))
                    figures[f"new{max_new}_{dtype}_bs{bs}"] = {
                        "answers_per_s": round(rate, 2), "speedup_same_dtype": round(rate / same_dtype, 2),
                        "speedup_vs_fastest_one_at_a_time": round(rate / fastest_single, 2),
                        "same_answer_as_bs1": same}
                    rows.append([max_new, dtype, bs, f"{rate:.1f}", f"{rate / same_dtype:.1f}x",
                                 f"{rate / fastest_single:.1f}x", f"{same}/{n_single} same answers as batch 1"])
    table(f"student generation: tiny student, {n_prompts} prompts (batch 1: {n_single} of them), greedy, untrained "
          f"(every answer runs to max_new_tokens), {threads} torch thread(s)",
          ["max_new_tokens", "dtype", "batch", "answers/s", "vs fastest batch 1, same dtype",
           "vs fastest batch 1", "note"], rows)
    batched = {k: v for k, v in figures.items() if "speedup_same_dtype" in v}
    best = max(batched, key=lambda k: batched[k]["speedup_vs_fastest_one_at_a_time"])
    return {"generation": figures, "generation_fastest": best,
            "generation_speedup_vs_fastest_one_at_a_time": batched[best]["speedup_vs_fastest_one_at_a_time"],
            "generation_prompts": n_prompts, "generation_threads": threads}


# ---------------------------------------------------------------- 3. pool stages

def _synthetic_inputs(n: int, workdir: Path) -> None:
    """Seed file (n), cache pool (n), 6K new instructions, referee scores (n) in workdir."""
    from lionflow.artifacts import JsonlWriter, iter_jsonl
    from lionflow.pools import write_seed_pools

    subprocess.run([sys.executable, "-m", "lionflow.oracle.datasets", "--synthetic", str(n + N_NEW),
                    "--out", str(workdir / "all.jsonl")], check=True, stdout=subprocess.DEVNULL)
    with open(workdir / "all.jsonl") as f, open(workdir / "seeds.jsonl", "w") as seeds, \
            open(workdir / "new_seeds.jsonl", "w") as new_seeds:
        for i, line in enumerate(f):
            (seeds if i < n else new_seeds).write(line)
    write_seed_pools(workdir / "seeds.jsonl", workdir / "train1.jsonl", workdir / "cache1.jsonl")
    rng = random.Random(0)
    with JsonlWriter(workdir / "new.jsonl", "instruction") as new:
        for r in iter_jsonl(workdir / "new_seeds.jsonl", "seed_instruction"):
            new.write({**r, "id": r["id"].replace("syn-", "new-"), "origin": rng.choice(["hard", "easy"]),
                       "iteration": 1, "parent_id": "syn-0000001", "max_similarity": round(rng.random() * 0.7, 4),
                       "parent_pool": "hard", "parent_similarity": round(rng.random(), 4)})
    with JsonlWriter(workdir / "scores.jsonl", "referee_score") as scores:
        for r in iter_jsonl(workdir / "cache1.jsonl", "instruction"):
            failed = rng.random() < 0.01
            t, s = (None, None) if failed else (rng.randint(2, 10), rng.randint(1, 10))
            orders = [{"first": first, "raw": f"Assistant 1: {t}\nAssistant 2: {s}", "attempts": 1,
                       "teacher_score": t, "student_score": s, "error": "unparseable" if failed else None}
                      for first in ("teacher", "student")]
            scores.write({"id": r["id"], "instruction": r["instruction"], "input": r["input"], "orders": orders,
                          "teacher_score": t, "student_score": s, "gap": None if failed else t - s,
                          "failed": failed})
    (workdir / "all.jsonl").unlink()
    (workdir / "new_seeds.jsonl").unlink()


STAGES = {  # name -> what the stage's rule script does
    "imports only": "baseline: python + lionflow imports",
    "init pools": "write_seed_pools (init_pools rule)",
    "update pools": "write_next_pools, mode all (update_pools rule)",
    "split hard/easy": "write_split_hard_easy (split_hard_easy rule)",
    "artifact read+write (frame)": "read_frame + write_frame of the cache pool (schema checks both ways)",
}


def _status_kib(field: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))


def run_stage(stage: str, d: Path) -> None:
    """One stage, in this (fresh) process; prints seconds, peak RSS and peak anonymous memory as JSON.

    Peak RSS counts the pages of input files that polars maps into memory (page cache the kernel
    can drop); the anonymous peak (sampled every 5 ms) is the memory the stage itself holds.
    """
    import threading

    from lionflow.discrimination import write_split_hard_easy
    from lionflow.frames import read_frame, write_frame
    from lionflow.pools import write_next_pools, write_seed_pools

    anon_peak = [0]

    def sample_anon() -> None:
        while True:
            anon_peak[0] = max(anon_peak[0], _status_kib("RssAnon"))
            time.sleep(0.005)

    threading.Thread(target=sample_anon, daemon=True).start()
    t0 = time.perf_counter()
    if stage == "init pools":
        write_seed_pools(d / "seeds.jsonl", d / "out_train.jsonl", d / "out_cache.jsonl")
    elif stage == "update pools":
        write_next_pools(d / "cache1.jsonl", [d / "new.jsonl"], "all",
                         d / "out_train.jsonl", d / "out_cache.jsonl")
    elif stage == "split hard/easy":
        write_split_hard_easy(d / "scores.jsonl", 1.0, d / "out_hard.jsonl", d / "out_easy.jsonl")
    elif stage == "artifact read+write (frame)":
        write_frame(read_frame(d / "cache1.jsonl", "instruction"), d / "out_cache.jsonl", "instruction")
    elif stage != "imports only":
        raise ValueError(stage)
    secs = time.perf_counter() - t0
    # VmHWM, not getrusage's ru_maxrss: that one keeps the parent's peak across fork + exec.
    print(json.dumps({"s": secs, "peak_rss_mib": _status_kib("VmHWM") / 1024,
                      "peak_anon_mib": max(anon_peak[0], _status_kib("RssAnon")) / 1024}))


def bench_pools(sizes: list[int]) -> dict:
    rows, figures = [], {}
    run.figures["pool_stages"] = figures  # filled as measured (see bench_generation)
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            t0 = time.perf_counter()
            _synthetic_inputs(n, d)
            prep = time.perf_counter() - t0
            mib = {p.name: p.stat().st_size / 2**20 for p in d.iterdir()}
            figures[str(n)] = {}
            for stage, what in STAGES.items():
                out = subprocess.run([sys.executable, __file__, "--stage", stage, "--dir", str(d)], check=True,
                                     capture_output=True, text=True).stdout.strip().splitlines()[-1]
                m = json.loads(out)
                figures[str(n)][stage] = {"s": round(m["s"], 2), "peak_rss_mib": round(m["peak_rss_mib"]),
                                          "peak_anon_mib": round(m["peak_anon_mib"])}
                rows.append([f"{n:,}", stage, f"{m['s']:.2f}", f"{m['peak_rss_mib']:.0f}",
                             f"{m['peak_anon_mib']:.0f}", what])
            print(f"  ({n:,}: inputs made in {prep:.0f} s; cache pool {mib['cache1.jsonl']:.0f} MiB, "
                  f"referee scores {mib['scores.jsonl']:.0f} MiB)")
    table("pool stages (each in its own process; synthetic pools of the oracle's task families)",
          ["instructions", "stage", "seconds", "peak RSS MiB", "peak anon MiB", "what"], rows)
    return {"pool_stages": figures}


# ---------------------------------------------------------------- 4. snakemake -n

def bench_snakemake_noop(iterations: int, dry_runs: int) -> dict:
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2", "--config", f"iterations={iterations}"]
    with tempfile.TemporaryDirectory() as tmp:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.splitlines()
        for f in files:
            if (ROOT / f).is_file() and not f.startswith(("results/", "logs/", ".cache/")):
                (Path(tmp) / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, Path(tmp) / f)
        summary = subprocess.run(snakemake + ["--summary"], cwd=tmp, check=True, capture_output=True,
                                 text=True).stdout.splitlines()
        n_outputs = 0
        for line in summary[1:]:  # output_file, date, rule, ...
            path, _, rule = line.split("\t")[:3]
            target = Path(tmp) / path
            if rule in ("build_base_student", "train_student"):  # directory() outputs
                target.mkdir(parents=True, exist_ok=True)
                for name in CHECKPOINT_PLACEHOLDER:
                    (target / name).touch()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            n_outputs += 1
        subprocess.run(snakemake + ["--touch", "--quiet"], cwd=tmp, check=True, capture_output=True)
        times = []
        for _ in range(dry_runs):
            t0 = time.perf_counter()
            out = subprocess.run(snakemake + ["-n"], cwd=tmp, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            text = out.stdout + out.stderr
            assert "Nothing to be done" in text, text[-2000:]
    secs = statistics.median(times)
    table(f"snakemake -n, {iterations} iterations configured, every output done ({n_outputs} files)",
          ["run", "seconds"], [[i + 1, f"{t:.2f}"] for i, t in enumerate(times)] + [["median", f"{secs:.2f}"]])
    return {"snakemake_dry_run_s": round(secs, 2), "snakemake_iterations": iterations,
            "snakemake_outputs": n_outputs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=70000)
    ap.add_argument("--cands", type=int, default=6000)
    ap.add_argument("--brute-sample", type=int, default=3, help="candidates timed with rouge_score brute force")
    ap.add_argument("--gen-prompts", type=int, default=1024, help="prompts answered batched (sorted by length)")
    ap.add_argument("--gen-single", type=int, default=32, help="of them, answered one at a time")
    ap.add_argument("--gen-new-tokens", default="32,128")
    ap.add_argument("--gen-batch-sizes", default="64,128,256")
    ap.add_argument("--gen-dtypes", default="float32,bfloat16")
    ap.add_argument("--gen-threads", type=int, default=os.cpu_count())
    ap.add_argument("--sizes", default="70000,700000", help="pool sizes of the pool-stage figures")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--dry-runs", type=int, default=3, help="timed `snakemake -n` runs (the median counts)")
    args = run.parse(ap, smoke=dict(pool=2000, cands=200, brute_sample=1, gen_prompts=16, gen_single=2,
                                    gen_new_tokens="4", gen_batch_sizes="8", gen_dtypes="float32", sizes="2000",
                                    iterations=2, dry_runs=1))
    ints = lambda s: [int(x) for x in s.split(",")]
    run.stage("dedup")
    run.figures |= bench_dedup(args.pool, args.cands, args.brute_sample)
    run.stage("generation")
    run.figures |= bench_generation(args.gen_prompts, args.gen_single, ints(args.gen_new_tokens),
                                    ints(args.gen_batch_sizes), args.gen_dtypes.split(","), args.gen_threads)
    run.stage("pool_stages")
    run.figures |= bench_pools(ints(args.sizes))
    run.stage("snakemake_noop")
    run.figures |= bench_snakemake_noop(args.iterations, args.dry_runs)


if __name__ == "__main__":
    if "--stage" in sys.argv:  # internal: one pool stage in its own process, its figures as JSON
        ap = argparse.ArgumentParser()
        ap.add_argument("--stage", choices=STAGES)
        ap.add_argument("--dir", type=Path)
        a = ap.parse_args()
        run_stage(a.stage, a.dir)
    else:
        run.main(main)
