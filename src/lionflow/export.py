"""`snakemake export`: a finished run as what people publish and load.

results/<run>/export/
  dataset/  the distilled data: every instruction the student was trained on with the teacher's answer,
            a Hugging Face datasets directory (`datasets.load_from_disk`) plus the same rows as parquet
            (data/train.parquet, what the Hub reads), and README.md, the dataset card;
  model/    the final student (`save_pretrained`: model, tokenizer, chat template; the LoRA adapter when
            it trained one) and README.md, the model card.

Both cards carry the run's provenance, all of it from summary.json: the config and its hash, the git
commit (and a dirty tree), package versions, each LLM role's endpoint and model with the model
versions the endpoint returned (`served_by`), requests and cost per role, the evaluation tables, and
the terms of use from config (`export.license`, `export.terms`). Never an API key: endpoints are
shown as base URL and model only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import jinja2
import yaml

from .artifacts import atomic_write, iter_jsonl
from .judge import role_configs
from .provenance import describe
from .report import markdown, open_ended_table, reasoning_table
from .summary import LEDGER_FIELDS

ROLES = ("teacher", "referee", "generator", "judge", "reference")  # the LLM roles of a run, in loop order
COLUMNS = ("id", "instruction", "input", "output", "teacher_model", "iteration", "origin", "parent_id",
           "trained_in")


# ---------------------------------------------------------------- the dataset

def dataset_rows(train_pools: list, teacher_answers: list) -> list[dict]:
    """One row per instruction the student was trained on (iteration k's train pool, in iteration order,
    with the teacher's answer of that iteration): the instruction and its input, the teacher's answer
    (`output`), the model asked, the iteration that produced it (0: a seed), its origin (seed, hard,
    easy), the id of the instruction it was modelled on (null for seeds) and the iterations whose
    training used it."""
    rows: dict[str, dict] = {}
    for k, (pool_path, answers_path) in enumerate(zip(train_pools, teacher_answers), 1):
        pool = {r["id"]: r for r in iter_jsonl(pool_path, "instruction")}
        for answer in iter_jsonl(answers_path, "answer"):
            if answer["id"] in rows:  # trained on again (pools.next_train_pool: all): same request, same answer
                rows[answer["id"]]["trained_in"].append(k)
                continue
            source = pool[answer["id"]]
            rows[answer["id"]] = {"id": answer["id"], "instruction": answer["instruction"], "input": answer["input"],
                                  "output": answer["answer"], "teacher_model": answer["model"],
                                  "iteration": source["iteration"], "origin": source["origin"],
                                  "parent_id": source["parent_id"], "trained_in": [k]}
    return list(rows.values())


def write_dataset(rows: list[dict], out_dir) -> datasets.Dataset:  # noqa: F821
    """save_to_disk (load_from_disk) and data/train.parquet (the Hub's format) of the same rows."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"), "instruction": datasets.Value("string"), "input": datasets.Value("string"),
        "output": datasets.Value("string"), "teacher_model": datasets.Value("string"),
        "iteration": datasets.Value("int32"), "origin": datasets.Value("string"),
        "parent_id": datasets.Value("string"), "trained_in": datasets.Sequence(datasets.Value("int32"))})
    ds = datasets.Dataset.from_list(rows, features=features)
    ds.save_to_disk(str(out_dir))
    (Path(out_dir) / "data").mkdir(exist_ok=True)
    ds.to_parquet(str(Path(out_dir) / "data" / "train.parquet"))
    return ds


# ---------------------------------------------------------------- provenance for the cards

def public_url(url: str) -> str:
    """A base URL without any user:password part (never written to a card)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, parts.query, ""))


def _llm_stats(summary: dict) -> list[dict]:
    return [*(s for it in summary["iterations"] for s in it.get("llm", {}).values()),
            *summary.get("eval_llm", {}).values()]


def roles(summary: dict) -> list[dict]:
    """Per LLM role of the run: endpoint base URL and model asked (from the run's config), the models and
    system fingerprints that answered (served_by, summed over the role's stages), requests and cost."""
    config = summary["provenance"]["config"]
    llm = {**config["llm"], **{k: v for k, v in role_configs(config["llm"], config["eval"]["judge"]).items()
                               if k in ("judge", "reference")}}
    stats = _llm_stats(summary)
    out = []
    for name in ROLES:
        mine = [s for s in stats if s["role"] == name]
        if not mine and name in ("judge", "reference"):
            continue  # the open-ended evaluation is off
        served: dict[tuple, int] = {}
        for s in mine:
            for entry in s.get("served_by", []):
                key = (entry["model"], entry["system_fingerprint"])
                served[key] = served.get(key, 0) + entry["answers"]
        totals = {f: sum(s.get(f, 0) for s in mine) for f in LEDGER_FIELDS}
        totals["cost_usd"] = round(totals["cost_usd"], 6)
        out.append({"role": name, "base_url": public_url(llm["endpoints"][llm[name]["endpoint"]]["base_url"]),
                    "model": llm[name]["model"], "stages": len(mine),
                    "served_by": [{"model": m, "system_fingerprint": fp, "answers": n}
                                  for (m, fp), n in sorted(served.items(), key=lambda i: (i[0][0], i[0][1] or ""))],
                    **totals})
    return out


def card_context(summary: dict, *, license: str, terms: str | None, student: dict | None = None) -> dict:
    """Everything a card template reads."""
    prov = summary["provenance"]
    judged = any(it.get("judge") for it in summary["iterations"]) or summary.get("base_judge")
    return {"run": summary["run"], "summary": summary, "provenance": prov, "provenance_line": describe(prov),
            "config_yaml": yaml.safe_dump(prov["config"], sort_keys=True, allow_unicode=True),
            "roles": roles(summary), "llm_total": summary.get("llm_total", {}),
            "reasoning_table": markdown(reasoning_table(summary)),
            "open_ended_table": markdown(open_ended_table(summary)) if judged else None,
            "license": license, "terms": terms, "student": student or {}}


def render(template_path, context: dict) -> str:
    path = Path(template_path)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(path.parent)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(path.name).render(**context)


# ---------------------------------------------------------------- the whole export

def export_model(student_dir, out_dir) -> dict:
    """The final student, loaded and saved again (save_pretrained), with its LoRA adapter if it has one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    student_dir, out_dir = Path(student_dir), Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(student_dir).save_pretrained(out_dir)
    if (student_dir / "adapter").is_dir():
        shutil.copytree(student_dir / "adapter", out_dir / "adapter")
    return {"architecture": type(model).__name__, "parameters": model.num_parameters(),
            "adapter": (out_dir / "adapter").is_dir()}


def export_run(summary: dict, *, train_pools: list, teacher_answers: list, student_dir, out_dataset, out_model,
               dataset_card, model_card, license: str, terms: str | None) -> dict:
    rows = dataset_rows(train_pools, teacher_answers)
    write_dataset(rows, out_dataset)
    student = {**export_model(student_dir, out_model),
               "base_model": summary["provenance"]["config"]["student"]["base_model"],
               "iterations": len(summary["iterations"]), "examples": len(rows),
               "train": summary["provenance"]["config"]["student"]["train"]}
    origins = {o: sum(r["origin"] == o for r in rows) for o in ("seed", "hard", "easy")}
    context = card_context(summary, license=license, terms=terms, student=student)
    atomic_write(Path(out_dataset) / "README.md", render(dataset_card, {**context, "rows": len(rows),
                                                                       "origins": origins}))
    atomic_write(Path(out_model) / "README.md", render(model_card, context))
    return {"rows": len(rows), "origins": origins, **student}
