"""The ablation: the t interval by hand, paired comparison of arms, arm configs, uniform parents."""
import pytest

from lionflow.ablation import arm_config, compare, deep_merge, t_interval, table, verdict
from lionflow.artifacts import validate
from lionflow.generation import parent_examples


def test_t_interval_by_hand():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) = 1.2910, s/sqrt(4) = 0.6455; t(0.975, df 3) = 3.1824
    # (from a t table) -> half width 2.0543.
    mean, low, high = t_interval([1, 2, 3, 4])
    assert mean == 2.5
    assert (low, high) == (pytest.approx(2.5 - 2.0543, abs=1e-4), pytest.approx(2.5 + 2.0543, abs=1e-4))
    # Two seeds: [0.5, -0.5]: s = 0.7071, s/sqrt(2) = 0.5, t(0.975, df 1) = 12.7062 -> +- 6.3531.
    assert t_interval([0.5, -0.5]) == (0.0, pytest.approx(-6.3531, abs=1e-4), pytest.approx(6.3531, abs=1e-4))
    # 90%: t(0.95, df 3) = 2.3534 -> half width 1.5191.
    assert t_interval([1, 2, 3, 4], confidence=0.9)[2] == pytest.approx(2.5 + 1.5191, abs=1e-4)
    assert t_interval([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])


def _summary(evals, judges=None, requests=100):
    evals = [{**e, "suite": sum(e.values()) / len(e)} for e in evals]  # the lm-eval group's declared average
    return {"run": "r", "base_eval": evals[0], "final_eval": evals[-1], "lm_eval_groups": ["suite"], "iterations": [
        {"iteration": k, "eval": e, "judge": None if judges is None else {"overall": {"mean_relative": judges[k - 1]}},
         "llm": {"referee": {"requests": requests}, "generator": {"requests": 10 * k}}}
        for k, e in enumerate(evals, 1)]}


def test_compare_pairs_arms_by_seed():
    summaries = {
        ("adversarial", 0): _summary([{"t": 0.50}, {"t": 0.60}], judges=[80.0, 90.0]),
        ("uniform", 0): _summary([{"t": 0.50}, {"t": 0.55}], judges=[80.0, 85.0]),
        ("adversarial", 1): _summary([{"t": 0.40}, {"t": 0.50}], judges=[70.0, 75.0]),
        ("uniform", 1): _summary([{"t": 0.40}, {"t": 0.52}], judges=[70.0, 80.0]),
    }
    ablation = compare(summaries, [0, 1])
    validate(ablation, "ablation", "test")
    rows = {(r["metric"], r["iteration"]): r for r in ablation["rows"]}
    assert set(rows) == {(m, k) for m in ("lm-eval t (%)", "lm-eval average (%)", "open-ended relative score (%)")
                         for k in (1, 2)}
    # Iteration 1 is shared by the arms of a seed: difference exactly 0.
    assert rows["lm-eval t (%)", 1]["difference"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "values": [0.0, 0.0]}
    # Iteration 2: differences 60-55 = +5 and 50-52 = -2 points -> mean 1.5, s = 4.9497, half = 12.7062*3.5 = 44.47.
    r = rows["lm-eval t (%)", 2]
    assert r["adversarial"]["mean"] == pytest.approx(55.0) and r["uniform"]["mean"] == pytest.approx(53.5)
    assert r["difference"]["values"] == [pytest.approx(5.0), pytest.approx(-2.0)]
    assert r["difference"]["mean"] == pytest.approx(1.5)
    assert r["difference"]["ci_high"] == pytest.approx(1.5 + 44.4717, abs=1e-3)
    assert verdict(r) == "no significant difference"
    assert rows["open-ended relative score (%)", 2]["difference"]["values"] == [5.0, -5.0]
    assert {q["stage"]: (q["adversarial"], q["uniform"]) for q in ablation["requests"]} == {
        "generator": (30, 30), "referee": (200, 200)}
    header, body = table(ablation)
    assert header[4] == "adv - uni" and any(row[4] == "+1.50" for row in body)


def test_verdict_follows_the_sign_of_the_interval():
    assert verdict({"difference": {"ci_low": 0.1, "ci_high": 2}}) == "adversarial better"
    assert verdict({"difference": {"ci_low": -3, "ci_high": -0.5}}) == "uniform better"


def test_arm_config_differs_only_in_strategy_seed_and_run():
    config = {"run": "demo", "seed": 0, "iterations": 2, "generation": {"new_hard": 60, "strategy": "adversarial"},
              "student": {"train": {"epochs": 20, "learning_rate": 1e-3}},
              "experiment": {"name": "abl", "seeds": [0, 1], "overrides": {"student": {"train": {"epochs": 5}}}}}
    arm = arm_config(config, "uniform", 1)
    assert arm["run"] == "abl-uniform-s1" and arm["seed"] == 1
    assert arm["generation"] == {"new_hard": 60, "strategy": "uniform"}
    assert arm["student"]["train"] == {"epochs": 5, "learning_rate": 1e-3}  # overrides merged, not replaced
    assert "experiment" not in arm and config["student"]["train"]["epochs"] == 20  # the input is untouched
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


def test_uniform_strategy_models_new_instructions_on_the_cache_pool():
    hard, easy, cache = [{"id": "h"}], [{"id": "e"}], [{"id": "h"}, {"id": "e"}, {"id": "x"}]
    assert parent_examples("adversarial", "hard", hard=hard, easy=easy, cache_pool=cache) is hard
    assert parent_examples("adversarial", "easy", hard=hard, easy=easy, cache_pool=cache) is easy
    for origin in ("hard", "easy"):
        assert parent_examples("uniform", origin, hard=hard, easy=easy, cache_pool=cache) is cache
    with pytest.raises(ValueError, match="generation.strategy='random'"):
        parent_examples("random", "hard", hard=hard, easy=easy, cache_pool=cache)


@pytest.mark.slow
def test_experiment_target_runs_both_arms_and_reports(tmp_path):
    """`snakemake experiment` on the micro config, one iteration per arm: both arms train the same
    student before any generation, so every difference is exactly 0; the report holds the table."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from lionflow.artifacts import read_json

    from conftest import ROOT

    for name in ("Snakefile", "rules", "workflow", "config", "resources", "tests"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "exp.yaml").write_text(
        "experiment: {name: exp, seeds: [0, 1], overrides: {iterations: 1, eval: {judge: {limit: 3}}}}\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    base = ["--cores", "2", "--configfile", "tests/micro/config.yaml", "exp.yaml"]  # after the targets
    proc = subprocess.run([sys.executable, "-m", "snakemake", "experiment", *base], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "adv - uni" in proc.stdout  # the table is printed
    ablation = read_json(tmp_path / "results/exp/ablation.json", "ablation")
    assert {r["metric"] for r in ablation["rows"]} >= {"lm-eval average (%)", "open-ended relative score (%)"}
    assert all(r["difference"]["values"] == [0.0, 0.0] for r in ablation["rows"])
    requests = {r["stage"]: (r["adversarial"], r["uniform"]) for r in ablation["requests"]}
    assert all(requests[stage][0] == requests[stage][1] for stage in ("teacher_train", "teacher_cache", "referee"))
    arm = read_json(tmp_path / "results/exp-uniform-s1/summary.json", "summary")
    assert arm["run"] == "exp-uniform-s1" and len(arm["iterations"]) == 1 and arm["iterations"][0]["judge"]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "experiment", "--report", "report.html", *base], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ablation.png" in (tmp_path / "report.html").read_text()
