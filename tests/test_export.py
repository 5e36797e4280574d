"""Export helpers (the whole export runs on the micro run in tests/test_pipeline.py)."""
from lionflow.export import public_url


def test_a_base_url_never_carries_credentials_into_a_card():
    assert public_url("https://user:s3cret@llm.example.com:8443/v1") == "https://llm.example.com:8443/v1"
    assert public_url("https://token@llm.example.com/v1") == "https://llm.example.com/v1"
    assert public_url("http://gpu-node:8000/v1") == "http://gpu-node:8000/v1"
    assert public_url("builtin://oracle") == "builtin://oracle"


def test_cards_say_dirty_tree_lora_and_no_terms():
    """The branches the micro run does not take: a dirty tree, a LoRA student, no terms, no judge."""
    import yaml
    from snakemake.utils import validate

    from lionflow.artifacts import validate as validate_record
    from lionflow.export import card_context, render
    from lionflow.provenance import config_sha256

    from conftest import ROOT

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["student"]["train"]["lora"] = {"enabled": True, "r": 4}
    config["eval"]["judge"]["enabled"] = False
    validate(config, str(ROOT / "config" / "schema.yaml"))
    stats = {"role": "teacher", "model": "oracle-1", "requests": 5, "cache_hits": 1, "paid": 4, "failures": 0,
             "prompt_tokens": 40, "completion_tokens": 8, "cost_usd": 0.25, "wall_s": 0.1,
             "served_by": [{"model": "oracle-1-2026", "system_fingerprint": "fp_1", "answers": 5}]}
    summary = {"run": "r", "iterations": [
        {"iteration": 1, "train_pool_size": 5, "cache_pool_size": 5, "n_hard": 2, "n_easy": 3, "new_hard": 1,
         "new_easy": 1, "teacher_score_mean": 9.0, "student_score_mean": 5.0, "referee_failures": 0,
         "llm": {"teacher_train": stats}, "eval": {"t": 0.5}, "judge": None}],
        "base_eval": {"t": 0.25}, "final_eval": {"t": 0.5}, "eval_llm": {},
        "llm_total": {"requests": 5, "cache_hits": 1, "paid": 4, "failures": 0, "retries": 0, "rate_limited": 0,
                      "prompt_tokens": 40, "completion_tokens": 8, "cost_usd": 0.25},
        "provenance": {"config_sha256": config_sha256(config), "config": config, "git_commit": "ab" * 20,
                       "git_dirty": True, "packages": {"torch": "2.13.0"}}}
    validate_record(summary, "summary", "test")
    student = {"architecture": "LlamaForCausalLM", "parameters": 1000, "adapter": True, "base_model": "builtin:tiny",
               "iterations": 1, "examples": 5, "train": config["student"]["train"]}
    text = render(ROOT / "resources" / "export" / "model_card.md.j2",
                  card_context(summary, license="apache-2.0", terms=None, student=student))
    assert text.startswith("---\nlicense: apache-2.0\n")
    assert f"git commit {'ab' * 20} from a DIRTY tree" in text and "**Dirty tree**" in text
    assert "Trained with LoRA (r 4, alpha 32" in text and "`adapter/` holds the last iteration's adapter." in text
    assert "No terms of use were given (export.terms)" in text
    assert "| teacher | builtin://oracle | oracle-1 | oracle-1-2026, fp_1: 5 |" in text
    assert "| teacher | 5 | 4 | 1 | 0 | 40 | 8 | 0.250000 |" in text
    assert "| referee | 0 | 0 |" in text  # a role with no requests is still listed
    assert "Open-ended" not in text  # the judge was off: no table, no judge or reference role
    assert "| judge |" not in text and "| reference |" not in text
