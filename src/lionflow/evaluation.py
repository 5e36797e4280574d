"""Final evaluation with lm-eval on the oracle task YAMLs (resources/lm_eval).

Called through the Python API, not the CLI, so the results land at a fixed path. Prompts are
rendered by the checkpoint's own chat template (`apply_chat_template`), the format the student
was trained on; a group's average is the one its YAML declares (`aggregate_metric_list`).
"""
import json
import logging
import time
from pathlib import Path

from .artifacts import atomic_write

log = logging.getLogger(__name__)
MAIN_METRICS = ("acc", "exact_match", "acc_norm", "f1", "bleu")  # first found is the task's score


def main_metric(task_results: dict) -> tuple[str, float]:
    """Pick the headline metric from lm-eval's {"exact_match,strip": .., "acc_stderr,none": ..}."""
    scores = {k: v for k, v in task_results.items()
              if "," in k and "_stderr" not in k.split(",")[0] and isinstance(v, (int, float))}
    for name in MAIN_METRICS:
        for key, v in scores.items():
            if key.split(",")[0] == name:
                return key, float(v)
    if not scores:
        raise ValueError(f"no metric in {sorted(task_results)}")
    key = sorted(scores)[0]
    return key, float(scores[key])


def item_scores(results: dict) -> dict[str, list[dict]]:
    """Per task, each document's `family` and `level` (where the task's data has them: the oracle
    tasks do) and its score under the task's main metric; [] for a task whose data has no family."""
    out = {}
    for task, samples in results.get("samples", {}).items():
        key, _ = main_metric(results["results"][task])
        metric, filt = key.split(",", 1)
        out[task] = [{"family": str(s["doc"]["family"]), "level": s["doc"].get("level"), "score": float(s[metric])}
                     for s in samples if s.get("filter", filt) == filt and "family" in s["doc"]]
    return out


def group_label(group: str, groups: list[str]) -> str:
    """How a group's declared average is labelled in tables: `average` when the run has one group."""
    return "average" if len(groups) == 1 else f"{group} (average)"


def _json_default(x):
    try:
        return float(x)  # numpy scalars
    except (TypeError, ValueError):
        return str(x)


def run_lm_eval(model_dir, tasks: list[str], include_path, out_json, *, batch_size: int,
                limit: int | None, device: str, data_dir=None) -> tuple[dict[str, float], list[str]]:
    """Evaluate model_dir on lm-eval tasks and groups; write the results JSON.

    Returns ({task or group: score}, [group names]): every task's main metric and every group's declared
    average. device: `student.device` (auto: the job's GPU, in bfloat16, when it has one).
    data_dir overrides where the oracle YAMLs read their data (default: data/ beside them).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    from .student.device import default_dtype, resolve_device

    t0 = time.time()
    device = resolve_device(device)
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype={default_dtype(device)}", tasks=list(tasks),
        # task metadata reaches the YAMLs' custom_dataset loader (utils.py) as kwargs
        task_manager=TaskManager(include_path=str(include_path),
                                 metadata={"data_dir": str(data_dir)} if data_dir else None),
        batch_size=batch_size, device=device, limit=limit, num_fewshot=0, log_samples=True,
        apply_chat_template=True)
    groups = sorted(g for g, r in results.get("groups", {}).items() if any("," in k for k in r))
    scores = {name: main_metric(r)[1] for name, r in results["results"].items()
              if name not in groups and any("," in k for k in r)}
    scores |= {g: main_metric(results["groups"][g])[1] for g in groups}
    results["lionflow"] = {"scores": scores, "groups": groups, "device": device,
                           "wall_time_s": round(time.time() - t0, 2), "items": item_scores(results)}
    results.pop("samples", None)  # the documents' scores by family are in lionflow.items
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_json, json.dumps(results, indent=1, default=_json_default))
    log.info("lm-eval %s on %s in %.1fs: %s", model_dir, device, time.time() - t0, scores)
    return scores, groups
