"""The ablation: the t interval by hand, paired comparison of arms, arm configs, uniform parents,
the experiment as one DAG with a shared iteration 1."""
import re

import pytest

from lionflow.ablation import (
    arm_config,
    compare,
    composition_table,
    deep_merge,
    mdd,
    shared_files,
    t_interval,
    table,
    verdict,
)
from lionflow.artifacts import validate
from lionflow.generation import parent_examples
from lionflow.layout import ledger_dir

from conftest import ROOT


def test_t_interval_by_hand():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) = 1.2910, s/sqrt(4) = 0.6455; t(0.975, df 3) = 3.1824
    # (from a t table) -> half width 2.0543.
    mean, low, high = t_interval([1, 2, 3, 4], 0.95)
    assert mean == 2.5
    assert (low, high) == (pytest.approx(2.5 - 2.0543, abs=1e-4), pytest.approx(2.5 + 2.0543, abs=1e-4))
    # Two seeds: [0.5, -0.5]: s = 0.7071, s/sqrt(2) = 0.5, t(0.975, df 1) = 12.7062 -> +- 6.3531.
    assert t_interval([0.5, -0.5], 0.95) == (0.0, pytest.approx(-6.3531, abs=1e-4), pytest.approx(6.3531, abs=1e-4))
    # 90%: t(0.95, df 3) = 2.3534 -> half width 1.5191.
    assert t_interval([1, 2, 3, 4], confidence=0.9)[2] == pytest.approx(2.5 + 1.5191, abs=1e-4)
    assert t_interval([3.0, 3.0, 3.0], 0.95) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0], 0.95)


def test_minimal_detectable_difference_by_hand():
    # [1, 2, 3, 4]: s/sqrt(4) = 0.6455; t(0.975, df 3) = 3.1824 and t(0.80, df 3) = 0.9785 (t table)
    # -> MDD = (3.1824 + 0.9785) * 0.6455 = 2.6859.
    assert mdd([1, 2, 3, 4], 0.95) == pytest.approx(2.6859, abs=1e-3)
    # Two seeds [5, -2]: s/sqrt(2) = 3.5; t(0.975, df 1) = 12.7062, t(0.80, df 1) = 1.3764 -> 49.289.
    assert mdd([5.0, -2.0], 0.95) == pytest.approx(49.289, abs=1e-2)
    # 90% and power 0.9 with df 3: t(0.95) = 2.3534, t(0.90) = 1.6377 -> 3.9911 * 0.6455 = 2.5763.
    assert mdd([1, 2, 3, 4], confidence=0.9, power=0.9) == pytest.approx(2.5763, abs=1e-3)
    assert mdd([2.0, 2.0, 2.0], 0.95) == 0.0  # no spread: any difference is detected
    with pytest.raises(ValueError, match="at least 2"):
        mdd([1.0], 0.95)


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
    ablation = compare(summaries, [0, 1], 0.95)
    validate(ablation, "ablation", "test")
    rows = {(r["metric"], r["iteration"]): r for r in ablation["rows"]}
    assert set(rows) == {(m, k) for m in ("lm-eval t (%)", "lm-eval average (%)", "open-ended relative score (%)")
                         for k in (1, 2)}
    # Iteration 1 is shared by the arms of a seed: difference exactly 0.
    assert rows["lm-eval t (%)", 1]["difference"] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "mdd": 0.0,
                                                         "values": [0.0, 0.0]}
    # Iteration 2: differences 60-55 = +5 and 50-52 = -2 points -> mean 1.5, s = 4.9497, half = 12.7062*3.5 = 44.47.
    r = rows["lm-eval t (%)", 2]
    assert r["adversarial"]["mean"] == pytest.approx(55.0) and r["uniform"]["mean"] == pytest.approx(53.5)
    assert r["difference"]["values"] == [pytest.approx(5.0), pytest.approx(-2.0)]
    assert r["difference"]["mean"] == pytest.approx(1.5)
    assert r["difference"]["ci_high"] == pytest.approx(1.5 + 44.4717, abs=1e-3)
    assert verdict(r) == "no significant difference"
    assert r["difference"]["mdd"] == pytest.approx(49.289, abs=1e-2)  # as in the MDD test: far above +1.5
    assert rows["open-ended relative score (%)", 2]["difference"]["values"] == [5.0, -5.0]
    assert {q["stage"]: (q["adversarial"], q["uniform"]) for q in ablation["requests"]} == {
        "generator": (30, 30), "referee": (200, 200)}
    header, body = table(ablation)
    assert header[4] == "adv - uni" and any(row[4] == "+1.50" and row[6] == "49.29" for row in body)
    assert header[6].startswith("MDD") and "by_family" not in ablation
    assert body[[b[:2] for b in body].index(["lm-eval t (%)", "2"])][7] == "no significant difference"
    powered = compare(summaries, [0, 1], 0.95, effect_of_interest=2.0)
    validate(powered, "ablation", "test")
    assert table(powered)[1][[b[:2] for b in body].index(["lm-eval t (%)", "2"])][7] == "too little power (MDD 49.29 > 2)"


def _items(scores):
    """Per-item scores of one checkpoint: oracle_gen items of families add (level 1, 2) and sort (level 1)."""
    return {"oracle_gen": [{"family": f, "level": lv, "score": x} for (f, lv), x in zip(
        [("add", 1), ("add", 2), ("sort", 1)], scores)]}


def test_compare_by_family_and_composition(tmp_path):
    from lionflow.report import plot_ablation_by_family

    summaries = {(st, seed): _summary([{"t": 0.5}, {"t": 0.5}]) for st in ("adversarial", "uniform") for seed in (0, 1)}
    # iteration 2, seed 0: adversarial gets add L2 right, uniform not; seed 1: both the same.
    items = {("adversarial", 0): {0: _items([0, 0, 0]), 1: _items([1, 0, 0]), 2: _items([1, 1, 0])},
             ("uniform", 0): {0: _items([0, 0, 0]), 1: _items([1, 0, 0]), 2: _items([1, 0, 0])},
             ("adversarial", 1): {0: _items([0, 0, 0]), 1: _items([0, 0, 1]), 2: _items([1, 0, 1])},
             ("uniform", 1): {0: _items([0, 0, 0]), 1: _items([0, 0, 1]), 2: _items([1, 0, 1])}}  # 0: base
    add3 = {"id": "a", "instruction": "What is 1 + 2?", "input": ""}  # add, level 1
    add22 = {"id": "b", "instruction": "What is 12 + 34?", "input": ""}  # add, level 2
    odd = {"id": "c", "instruction": "Write a poem.", "input": ""}
    sets = {(st, seed): {k: {"hard split": [add3], "new hard": [add22] * (2 if st == "adversarial" else 1) + [odd],
                             "new easy": []} for k in (1, 2)} for st in ("adversarial", "uniform") for seed in (0, 1)}
    ablation = compare(summaries, [0, 1], 0.95, items=items, sets=sets)
    validate(ablation, "ablation", "test")
    rows = {(r["metric"], r["iteration"]): r for r in ablation["by_family"]}
    assert set(rows) == {(m, k) for m in ("oracle_gen add", "oracle_gen add L1", "oracle_gen add L2",
                                          "oracle_gen sort", "oracle_gen sort L1") for k in (0, 1, 2)}
    # add, iteration 2: seed 0 adversarial 100% vs uniform 50% (+50 points), seed 1 50% vs 50% (0).
    r = rows["oracle_gen add", 2]
    assert r["items"] == 2 and r["difference"]["values"] == [50.0, 0.0] and r["difference"]["mean"] == 25.0
    assert r["difference"]["mdd"] == pytest.approx(mdd([50.0, 0.0], 0.95))
    assert rows["oracle_gen add L2", 2]["difference"]["values"] == [100.0, 0.0]
    assert rows["oracle_gen add L2", 2]["items"] == 1
    assert rows["oracle_gen add", 1]["difference"]["values"] == [0.0, 0.0]  # shared iteration 1
    comp = {(c["iteration"], c["set"], c["family"], c["level"]): (c["adversarial"], c["uniform"])
            for c in ablation["composition"]}
    assert comp[2, "new hard", "add", 2] == (2, 1) and comp[2, "new hard", "other", None] == (1, 1)
    assert comp[1, "hard split", "add", 1] == (1, 1)
    header, body = composition_table(ablation)
    assert header[3] == "adversarial: L1 / L2" and ["2", "new hard", "add", "0 / 2 (total 2)", "0 / 1 (total 1)"] in body
    assert ["2", "new hard", "other", "- (total 1)", "- (total 1)"] in body  # no oracle family, no level
    plot_ablation_by_family(ablation, tmp_path / "by_family.png")
    assert (tmp_path / "by_family.png").stat().st_size > 10_000
    header, body = table(ablation, "by_family")
    assert header[2] == "items" and ["oracle_gen add", "2", "2", "75.00", "50.00", "+25.00"] == body[
        [b[:2] for b in body].index(["oracle_gen add", "2"])][:6]


def test_the_manipulation_check_says_whether_the_arms_data_differed():
    from lionflow.ablation import manipulation_check, manipulation_table, manipulation_verdict, total_variation

    assert total_variation({"a": 2, "b": 2}, {"a": 1, "b": 1}) == 0.0   # the same mix, other sizes
    assert total_variation({"a": 3}, {"b": 5}) == 1.0
    assert total_variation({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
    add = lambda n: [{"id": f"a{i}", "instruction": f"What is {i} + 2?", "input": ""} for i in range(n)]  # add L1
    sort = lambda n: [{"id": f"s{i}", "instruction": "Sort these numbers in ascending order.",
                       "input": f"{i}, 5, 9"} for i in range(n)]
    pool = add(10) + sort(10)

    def sets(adversarial_new, uniform_new):
        return {(st, seed): {1: {"cache pool": pool, "hard split": add(8), "new hard": new, "new easy": sort(4)}}
                for st, new in (("adversarial", adversarial_new), ("uniform", uniform_new)) for seed in (0, 1, 2)}

    # The adversarial arm models new hard instructions on its hard split (all add), the uniform one on the pool.
    rows = manipulation_check(sets(add(20), add(10) + sort(10)), [0, 1, 2], 0.95)
    new_hard = next(r for r in rows if r["set"] == "new hard")
    assert new_hard["values"] == [0.5, 0.5, 0.5] and new_hard["p_same_mix"] < 0.001
    assert next(r for r in rows if r["set"] == "new easy")["mean"] == 0.0
    split = next(r for r in rows if r["set"] == "hard split" and r["arms"] == "adversarial")
    assert split["against"] == "cache pool" and split["mean"] == pytest.approx(0.5)
    assert manipulation_verdict(rows, 0.95).startswith("The arms' new instructions differ in family x level mix in "
                                                      "iteration 1 new hard (TV 0.50")
    same = manipulation_check(sets(add(10) + sort(10), add(10) + sort(10)), [0, 1, 2], 0.95)
    assert "the adversarial signal had nothing to act on" in manipulation_verdict(same, 0.95)
    header, body = manipulation_table({"confidence": 0.95, "manipulation": rows})
    assert header[3] == "TV distance" and body[0][:4] == ["1", "new hard vs new hard", "adversarial vs uniform", "0.500"]


def test_arms_share_iteration_1_but_not_generation():
    config = {"eval": {"judge": {"enabled": True}}}
    files, directories = shared_files(config)
    assert set(directories) == {"base_student", "iter1/student"}
    assert {"iter1/hard.jsonl", "iter1/easy.jsonl", "iter1/referee_scores.jsonl", "eval/iter1.json",
            "judge/iter1.json"} <= set(files)
    assert not any("new_" in f or "generator" in f or "rejected" in f or "iter2" in f for f in files)
    assert not any(f.startswith("judge/") for f in shared_files({"eval": {"judge": {"enabled": False}}})[0])


def test_verdict_follows_the_sign_of_the_interval():
    assert verdict({"difference": {"mean": 1.0, "ci_low": 0.1, "ci_high": 2, "values": [0.8, 1.2]}}) == "adversarial better"
    assert verdict({"difference": {"mean": -2.0, "ci_low": -3, "ci_high": -0.5, "values": [-2.2, -1.8]}}) \
        == "uniform better"
    # every seed differs by the same amount: a zero-width interval is no evidence
    assert verdict({"difference": {"mean": -1.67, "ci_low": -1.67, "ci_high": -1.67, "values": [-1.67] * 2}}) \
        == "no spread over seeds: not testable"
    assert verdict({"difference": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0, "values": [0.0] * 2}}) \
        == "no significant difference"
    # an interval containing 0: too little power where the MDD exceeds the effect of interest
    wide = {"difference": {"mean": 0.5, "ci_low": -4.0, "ci_high": 5.0, "mdd": 6.2, "values": [-1.0, 2.0, 0.5]}}
    assert verdict(wide, effect_of_interest=2.0) == "too little power (MDD 6.20 > 2)"
    assert verdict(wide, effect_of_interest=8.0) == verdict(wide) == "no significant difference"


def test_the_smollm2_experiment_trains_with_its_loop_recipe():
    """Snakemake merges config files key by key: config/config.yaml's experiment.overrides (the demo
    experiment's 5 epochs) must not reach the SmolLM2 arms, which train with config/smollm2_loop.yaml."""
    import yaml
    from snakemake.utils import update_config

    config = {}
    for name in ("config.yaml", "smollm2.yaml", "smollm2_loop.yaml", "smollm2_experiment.yaml"):
        update_config(config, yaml.safe_load((ROOT / "config" / name).read_text()))
    loop = yaml.safe_load((ROOT / "config" / "smollm2_loop.yaml").read_text())
    for strategy in (None, "adversarial", "uniform"):
        arm = arm_config(config, strategy, 0)
        assert arm["student"]["train"] == config["student"]["train"]           # the loop's recipe, untouched
        assert arm["student"]["train"]["epochs"] == loop["student"]["train"]["epochs"] == 2
        assert arm["iterations"] == loop["iterations"] == 3
        assert arm["eval"]["lm_eval"]["tasks"] == ["oracle_levels", "oracle"] and arm["eval"]["lm_eval"]["limit"] is None


def test_arm_config_differs_only_in_strategy_seed_and_run():
    config = {"run": "demo", "seed": 0, "iterations": 2, "generation": {"new_hard": 60, "strategy": "adversarial"},
              "llm": {"ledger_dir": None, "budget_usd": 5.0},  # each run's own ledger
              "student": {"train": {"epochs": 20, "learning_rate": 1e-3}},
              "experiment": {"name": "abl", "seeds": [0, 1], "overrides": {"student": {"train": {"epochs": 5}}}}}
    arm = arm_config(config, "uniform", 1)
    assert arm["run"] == "abl-uniform-s1" and arm["seed"] == 1
    assert arm["generation"] == {"new_hard": 60, "strategy": "uniform"}
    assert arm["student"]["train"] == {"epochs": 5, "learning_rate": 1e-3}  # overrides merged, not replaced
    assert "experiment" not in arm and config["student"]["train"]["epochs"] == 20  # the input is untouched
    shared = arm_config(config, None, 1)  # the seed's shared run: iteration 1 for both arms
    assert shared["run"] == "abl-s1" and shared["generation"]["strategy"] == "adversarial"  # never generates
    assert {k: v for k, v in shared.items() if k not in ("run", "generation")} == {
        k: v for k, v in arm.items() if k not in ("run", "generation")}
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}
    # a budget is per run: each arm gets its own ledger (null: results/<arm>/ledger), not the main run's,
    # while a ledger the user shares between runs stays shared
    assert ledger_dir(arm) == "results/abl-uniform-s1/ledger" and ledger_dir(config) == "results/demo/ledger"
    shared_ledger = {**config, "llm": {"ledger_dir": "/proj/ledger", "budget_usd": 5.0}}
    assert ledger_dir(arm_config(shared_ledger, "uniform", 1)) == "/proj/ledger"


def test_uniform_strategy_models_new_instructions_on_the_cache_pool():
    hard, easy, cache = [{"id": "h"}], [{"id": "e"}], [{"id": "h"}, {"id": "e"}, {"id": "x"}]
    assert parent_examples("adversarial", "hard", hard=hard, easy=easy, cache_pool=cache) is hard
    assert parent_examples("adversarial", "easy", hard=hard, easy=easy, cache_pool=cache) is easy
    for origin in ("hard", "easy"):
        assert parent_examples("uniform", origin, hard=hard, easy=easy, cache_pool=cache) is cache
    with pytest.raises(ValueError, match="generation.strategy='random'"):
        parent_examples("random", "hard", hard=hard, easy=easy, cache_pool=cache)


def _workflow_copy(tmp_path, experiment_yaml: str):
    """The workflow in tmp_path with an experiment config: the micro run, two seeds."""
    import shutil

    for name in ("Snakefile", "experiment.smk", "rules", "workflow", "config", "resources", "tests", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "exp.yaml").write_text(experiment_yaml)
    return ["--configfile", "tests/micro/config.yaml", "exp.yaml"]  # after the targets


def _snakemake(tmp_path, *args, timeout=900, **env):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _dry_run_jobs(text: str) -> list[dict]:
    """The jobs of a Snakemake printout (a dry run or a run): rule, wildcards, input and resources of each."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", text):
        if m := re.match(r"(?:local)?rule (\w+):\n", block):
            fields = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
            jobs.append({"rule": m.group(1), "wildcards": fields.get("wildcards", ""), "input": fields.get("input", ""),
                         "resources": dict(kv.split("=", 1) for kv in fields.get("resources", "").split(", ") if "=" in kv)})
    return jobs


def test_experiment_is_one_dag_with_each_arms_gpu_jobs_and_one_shared_iteration_1(tmp_path):
    """`snakemake -s experiment.smk --profile profiles/slurm -n` lists every arm's jobs with the profile's
    resources (not a nested local run), and iteration 1 once per seed."""
    base = _workflow_copy(tmp_path, "experiment: {name: exp, seeds: [0, 1], overrides: {iterations: 3}}\n")
    # A user's own settings for one arm's copy of a rule win, key by key, over the stage rule's
    # (its own threads do not drop the stage rule's GPUs).
    profile = tmp_path / "profiles/slurm/config.yaml"
    text = profile.read_text().replace("set-threads:\n", "set-threads:\n  uniform_s1_train_student: 3\n")
    profile.write_text(text.replace("set-resources:\n", "set-resources:\n  uniform_s1_train_student:\n    mem_mb: 1234\n"))
    proc = _snakemake(tmp_path, "-s", "experiment.smk", "--profile", "profiles/slurm", "-n", *base, timeout=300,
                      LIONFLOW_SLURM_ACCOUNT="acct", LIONFLOW_SLURM_CPU_PARTITION="cpu", LIONFLOW_SLURM_GPU_PARTITION="gpu")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _dry_run_jobs(proc.stdout)
    training = sorted((j["rule"], j["wildcards"]) for j in jobs if j["rule"].endswith("train_student"))
    # One iteration-1 training per seed (the shared run), iterations 2 and 3 in each arm.
    assert training == sorted([(f"shared_s{s}_train_student", "k=1") for s in (0, 1)] + [
        (f"{st}_s{s}_train_student", f"k={k}") for st in ("adversarial", "uniform") for s in (0, 1) for k in (2, 3)])
    for job in jobs:  # the GPU rules of every arm get the profile's set-resources (gpu, partition)
        stage = re.sub(r"^(shared|adversarial|uniform)_s\d+_", "", job["rule"])
        gpus = {"train_student": "8", "answer_with_student": "1", "evaluate_student": "1",
                "answer_questions_with_student": "1"}.get(stage, "0")
        assert job["resources"].get("gpu") == gpus, job
        assert job["resources"]["slurm_partition"] == ("gpu" if gpus != "0" else "cpu"), job
        if stage == "train_student":  # the user's own mem_mb for one copy; the stage rule's otherwise
            own = job["rule"] == "uniform_s1_train_student"
            assert job["resources"]["mem_mb"] == ("1234" if own else "256000"), job
    rules = {j["rule"] for j in jobs}
    assert {f"{st}_s{s}_share_iteration1" for st in ("adversarial", "uniform") for s in (0, 1)} <= rules
    for stage in ("init_pools", "build_base_student", "answer_questions_with_reference"):
        assert {r for r in rules if r.endswith(stage)} == {f"shared_s{s}_{stage}" for s in (0, 1)}, stage
    for job in jobs:  # iteration 1 up to generation and the base checkpoint only in the shared runs
        if job["wildcards"] and not job["rule"].endswith("generate_instructions"):
            first = re.search(r"\bk=1\b|checkpoint=(base|iter1)\b", job["wildcards"]) is not None
            assert first == job["rule"].startswith("shared_"), job
    assert sum(r.endswith("generate_instructions") for r in rules) == 4  # each arm generates its own
    assert not any("run_experiment_arm" in r for r in rules)


@pytest.mark.slow
def test_experiment_target_runs_both_arms_and_reports(tmp_path):
    """`snakemake -s experiment.smk` on the micro config, two iterations per arm: the arms of a seed take
    iteration 1 from the seed's shared run, so every difference there is exactly 0; each arm generates
    its own new instructions and goes on from the copied files; the report holds the tables and plots."""
    from lionflow.artifacts import read_json

    base = ["--cores", "2", *_workflow_copy(tmp_path, "experiment: {name: exp, seeds: [0, 1], overrides: "
                                                      "{iterations: 2, student: {train: {epochs: 2}}, eval: {judge: {limit: 3}}}}\n")]
    proc = _snakemake(tmp_path, "-s", "experiment.smk", *base, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    trained = {j["rule"]: j["input"] for j in _dry_run_jobs(proc.stdout + proc.stderr) if j["rule"].endswith("train_student")}
    assert trained["uniform_s1_train_student"].startswith("results/exp-uniform-s1/iter1/student,"), trained
    assert "adv - uni" in proc.stdout and "MDD" in proc.stdout and "oracle_gen add" in proc.stdout  # printed
    ablation = read_json(tmp_path / "results/exp/ablation.json", "ablation")
    assert {r["metric"] for r in ablation["rows"]} >= {"lm-eval average (%)", "open-ended relative score (%)"}
    assert {r["iteration"] for r in ablation["rows"]} == {1, 2}
    assert all(r["difference"]["values"] == [0.0, 0.0] for r in ablation["rows"] + ablation["by_family"]
               if r["iteration"] <= 1)  # the shared base student and iteration 1
    # per family for every checkpoint: the base student (0, where both arms start), iterations 1 and 2
    assert {r["iteration"] for r in ablation["by_family"]} == {0, 1, 2}
    assert {c["set"] for c in ablation["composition"]} == {"cache pool", "hard split", "new hard", "new easy"}
    assert {c["iteration"] for c in ablation["composition"]} == {1, 2}
    # the manipulation check comes first in the printed table, before any outcome
    assert {(m["iteration"], m["set"], m["arms"]) for m in ablation["manipulation"]} >= {
        (2, "new hard", "adversarial vs uniform"), (1, "hard split", "adversarial")}
    assert proc.stdout.index("## Manipulation check") < proc.stdout.index("## Outcomes")
    arms = {st: read_json(tmp_path / f"results/exp-{st}-s1/summary.json", "summary") for st in ("adversarial", "uniform")}
    arm = arms["uniform"]
    assert arm["run"] == "exp-uniform-s1" and len(arm["iterations"]) == 2 and arm["iterations"][1]["judge"]
    first = [{k: v for k, v in a["iterations"][0].items() if k in ("n_hard", "n_easy", "eval", "judge")}
             for a in arms.values()]
    assert first[0] == first[1]  # iteration 1: the shared run's, in both arms
    # iteration 1 is the shared run's, copied into both arms; generation is each arm's own
    shared = tmp_path / "results/exp-s1"
    for strategy in ("adversarial", "uniform"):
        run = tmp_path / f"results/exp-{strategy}-s1"
        assert (run / "iter1/referee_scores.jsonl").read_text() == (shared / "iter1/referee_scores.jsonl").read_text()
        assert (run / "iter1/new_hard.jsonl").is_file()
        # iteration 2 is the arm's own, trained from its copy of the iteration-1 checkpoint (above)
        assert (run / "iter2/student/training_log.json").is_file() and not (shared / "iter2").exists()
    assert not (shared / "iter1/new_hard.jsonl").exists() and not (shared / "summary.json").exists()
    proc = _snakemake(tmp_path, "-s", "experiment.smk", "-n", *base, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # up to date: only the target's printout would run
    assert [j["rule"] for j in _dry_run_jobs(proc.stdout)] == ["experiment"], proc.stdout[-3000:]
    proc = _snakemake(tmp_path, "-s", "experiment.smk", "--report", "report.html", *base, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "report.html").read_text()
    assert "ablation.png" in report and "ablation_by_family.png" in report
