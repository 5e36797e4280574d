"""Benchmarks that never rot (issue 26): every script in benchmarks/ runs here in its smoke mode (tiny
sizes, seconds, the same stages and JSON keys as the real run), and its last stdout line is one JSON
object with the keys the real run prints. The GPU check's smoke (CPU, two processes over gloo) runs in
tests/test_gpu_check.py; here, its GPU mode on a machine without a GPU must refuse clearly.
A benchmark that fails exits 1, names the failed stage and still prints what it measured (benchmarks/stages.py)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
HELPERS = {"stages.py", "workflow_config.py"}  # modules the benchmarks import, not benchmarks
STAGES_KEYS = {"benchmark", "smoke", "stages_s", "failed_stage", "error"}  # benchmarks/stages.py's
SCENARIO_KEYS = ("requests", "wall_s", "req_s", "cpu_ms_per_req", "rejected_429", "retries", "failures", "answered")

# script -> the keys its JSON line must have (besides STAGES_KEYS), as the real run prints them.
SMOKE = {
    "scale.py": {"dedup_s", "dedup_brute_force_s_extrapolated", "dedup_brute_force_sample", "dedup_speedup",
                 "dedup_rejected", "generation", "generation_fastest", "generation_speedup_vs_fastest_one_at_a_time",
                 "generation_prompts", "generation_threads", "pool_stages", "snakemake_dry_run_s",
                 "snakemake_iterations", "snakemake_outputs"},
    "dedup_speed.py": {"pool", "candidates", "dedup_s", "dedup_cpu_s", "rejected", "peak_rss_mib",
                       "checked_vs_rouge_score"},
    "cache_scale.py": {"entries", "parts", "cache_mib", "first_job", "later_job"},
    "decontamination.py": {"eval_problems", "count_per_origin", "max_rounds", "settings"},
    "llm_throughput.py": {f"{s}.{k}" for s in ("realistic", "rpm", "tpm", "stress", "faults", "shared")
                          for k in SCENARIO_KEYS}
    | {f"{s}.fraction_of_limit" for s in ("realistic", "rpm", "tpm", "stress", "shared")}
    | {"faults.completion_rate", "faults.duplicates", "faults.paid_per_unique", "shared.paid_per_unique",
       "shared.machinery.overhead_per_paid_request_us", "stress.cpu_ratio_to_bare"},
    "fsdp2_memory.py": {"layers", "parameters", "processes", "state_ratio", "max_loss_diff", "runs"},
    "lora.py": {"student", "examples", "lora_config", "full", "lora"},
    "startup.py": {"config", "cpus", "load_1min", "dry_run_cold_s", "dry_run_cold_cpu_s"}
    | {f"{case}_{x}" for case in ("dry_run", "dry_run_experiment", "job_startup", "job_startup_experiment")
       for x in ("s", "cpu_s")},
    "train_throughput.py": {"model", "examples", "batch", "max_length", "epochs", "threads", "peak_flops",
                            "padding_share_random_batches", "arms", "ratios"},
    "student_answers.py": {"model", "prompts", "max_new_tokens", "hf_batch", "arms"},
    "lora_dropout.py": {"model", "batch", "length", "step_s", "median_ratio", "dropout_ops_self_cpu_share"},
}
# The GPU check: gpu_check.sh starts gpu_check.py; smoke mode in tests/test_gpu_check.py, refusal here.
GPU = {"gpu_check.sh", "gpu_check.py"}


def run(args: list[str], cwd: Path, **env) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no stdout (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc, json.loads(lines[-1])  # the last line is the JSON object


def test_every_benchmark_has_a_smoke_run():
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh")} - HELPERS
    assert scripts == set(SMOKE) | GPU, "a benchmark without a smoke run here (or a stale entry)"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_smoke(script, tmp_path):
    proc, out = run([sys.executable, str(BENCH / script), "--smoke"], cwd=tmp_path)
    assert proc.returncode == 0 and out["failed_stage"] is None, (out.get("failed_stage"), out.get("error"),
                                                                  proc.stderr[-4000:])
    assert out["benchmark"] == script.removesuffix(".py") and out["smoke"] is True and out["error"] is None
    assert SMOKE[script] | STAGES_KEYS <= set(out), sorted(SMOKE[script] | STAGES_KEYS - set(out))
    assert out["stages_s"] and all(s >= 0 for s in out["stages_s"].values())
    assert list(tmp_path.iterdir()) == [], "a benchmark left files in its working directory"


def test_gpu_check_refuses_without_a_gpu(tmp_path):
    """Its GPU mode on a machine without a GPU: exit 1, the setup stage named, the way out (--smoke) said."""
    proc, out = run(["bash", str(BENCH / "gpu_check.sh"), "--work", str(tmp_path / "work")], cwd=tmp_path,
                    PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", OUT=str(tmp_path / "out"))
    assert proc.returncode == 1 and out["ok"] is False and out["mode"] == "gpu"
    assert out["failed_stage"] == "setup" and "--smoke" in out["errors"]["setup"], out["errors"]
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == out


def bench_script(path: Path, body: str) -> Path:
    """A benchmark made of benchmarks/stages.py: stage "first" measures first_s, then `body` (stage "second")."""
    path.write_text(f"import argparse, sys, time\nsys.path.insert(0, {str(BENCH)!r})\nfrom stages import Stages\n"
                    f"run = Stages({path.stem!r})\n\n" + textwrap.dedent("""
        def main():
            run.parse(argparse.ArgumentParser(), smoke=dict())
            run.stage("first")
            run.figures["first_s"] = 1.5
            run.stage("second")
        """) + textwrap.indent(textwrap.dedent(body), "    ") + "\n\nrun.main(main)\n")
    return path


def test_a_failing_stage_is_named_and_earlier_figures_are_printed(tmp_path):
    script = bench_script(tmp_path / "bench_fail.py", 'raise RuntimeError("the second stage broke")')
    proc, out = run([sys.executable, str(script)], cwd=tmp_path)
    assert proc.returncode == 1
    assert out["failed_stage"] == "second" and out["error"] == "RuntimeError: the second stage broke"
    assert out["first_s"] == 1.5 and set(out["stages_s"]) == {"first", "second"} and out["smoke"] is False
    assert "FAILED in stage 'second'" in proc.stderr and "Traceback" in proc.stderr


def test_a_real_benchmark_failing_in_a_subprocess(tmp_path):
    """cache_scale.py with an empty cache: its first job finds no answer; what the job said is on stderr."""
    proc, out = run([sys.executable, str(BENCH / "cache_scale.py"), "--entries", "0", "--parts", "1",
                     "--lookups", "1"], cwd=tmp_path)
    assert proc.returncode == 1 and out["failed_stage"] == "first_job", out
    assert out["entries"] == 0 and out["cache_mib"] == 0 and "write_parts" in out["stages_s"]
    assert "CalledProcessError" in out["error"] and "AssertionError" in proc.stderr


def test_smoke_sizes_are_defaults_an_option_given_wins():
    import argparse

    sys.path.insert(0, str(BENCH))
    from stages import Stages

    def parse(*argv):
        ap = argparse.ArgumentParser()
        ap.add_argument("--pool", type=int, default=70000)
        ap.add_argument("--sizes", default="70000,700000")
        return vars(Stages("x").parse(ap, smoke=dict(pool=2000, sizes="2000"), argv=list(argv)))

    assert parse() == {"pool": 70000, "sizes": "70000,700000", "smoke": False}
    assert parse("--smoke") == {"pool": 2000, "sizes": "2000", "smoke": True}
    assert parse("--smoke", "--pool", "5") == {"pool": 5, "sizes": "2000", "smoke": True}


def test_a_benchmark_killed_by_sigterm_prints_what_it_measured(tmp_path):
    script = bench_script(tmp_path / "bench_slow.py", """
        print("second stage started", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "second stage started"
    proc.terminate()
    out = json.loads(proc.communicate(timeout=30)[0].strip().splitlines()[-1])
    assert proc.returncode == 1 and out["failed_stage"] == "second" and out["first_s"] == 1.5
    assert out["error"] == "KeyboardInterrupt: terminated by signal 15"
