"""lm-eval on the oracle task YAMLs, offline, with stand-in data in a tmp dir."""
import json
import shutil
from pathlib import Path

import pytest

from lionflow.evaluation import main_metric, run_lm_eval
from lionflow.student.builtin import build_tiny_student

LM_EVAL = Path(__file__).resolve().parents[1] / "resources" / "lm_eval"


def test_main_metric():
    assert main_metric({"alias": "x", "exact_match,strip": 0.5, "exact_match_stderr,strip": 0.1}) == (
        "exact_match,strip", 0.5)
    assert main_metric({"acc,none": 0.5, "exact_match,strip": 0.25})[1] == 0.5
    assert main_metric({"acc,none": 0.25, "acc_norm,none": 0.3, "acc_stderr,none": 0.1})[1] == 0.25


def test_run_lm_eval(tmp_path, monkeypatch):
    # Copy the YAMLs (not their data) and run from elsewhere: the data path must
    # resolve relative to the YAML, not the working directory.
    inc = tmp_path / "lm_eval"
    (inc / "data").mkdir(parents=True)
    for f in ["_oracle_template_yaml", "oracle.yaml", "oracle_gen.yaml", "oracle_mc.yaml", "utils.py"]:
        shutil.copy(LM_EVAL / f, inc / f)
    gen = [{"question": f"What is {a} + 1?", "answer": str(a + 1), "family": "add", "level": 1} for a in range(4)]
    mc = [{"question": f"Is {a} even or odd?", "choices": ["even", "odd"], "label": a % 2, "family": "parity"}
          for a in range(4)]
    (inc / "data" / "oracle_gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen))
    (inc / "data" / "oracle_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    model = build_tiny_student(tmp_path / "tiny", seed=0, hidden_size=64, num_layers=2, num_heads=2,
                               intermediate_size=128, max_positions=256)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval" / "results.json"
    scores, groups = run_lm_eval(model, ["oracle"], inc, out, batch_size=4, limit=None, device="cpu")
    assert set(scores) == {"oracle_gen", "oracle_mc", "oracle"} and groups == ["oracle"]
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # The group's score is the unweighted mean its YAML declares.
    assert scores["oracle"] == pytest.approx((scores["oracle_gen"] + scores["oracle_mc"]) / 2)
    saved = json.loads(out.read_text())
    assert saved["lionflow"]["scores"] == scores
    assert saved["n-samples"]["oracle_mc"]["effective"] == 4 and "samples" not in saved
    # Each item's score with its family (and level where the data has one), averaging to the task's score.
    items = saved["lionflow"]["items"]
    assert [(d["family"], d["level"]) for d in items["oracle_gen"]] == [("add", 1)] * 4
    assert [(d["family"], d["level"]) for d in items["oracle_mc"]] == [("parity", None)] * 4
    for task in ("oracle_gen", "oracle_mc"):
        assert sum(d["score"] for d in items[task]) / 4 == pytest.approx(scores[task])
    # data_dir overrides the data beside the YAMLs (e.g. a per-run eval set)
    other = tmp_path / "other"
    other.mkdir()
    (other / "oracle_gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen[:2]))
    (other / "oracle_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc[:2]))
    run_lm_eval(model, ["oracle"], inc, out, batch_size=4, limit=None, device="cpu", data_dir=other)
    assert json.loads(out.read_text())["n-samples"]["oracle_gen"]["effective"] == 2
