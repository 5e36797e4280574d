"""Student: tiny builtin model, prompt format, label masking, training, generation."""
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from lionflow.student.builtin import build_tiny_student
from lionflow.student.generate import generate_answers
from lionflow.student.prompting import prompt_text, user_content
from lionflow.student.train import TrainConfig, encode_example, train
from lionflow.student.train import main as train_main

from conftest import generate_config, train_settings

TINY = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_positions=256)
CFG = train_settings(epochs=8, learning_rate=3e-3, effective_batch_size=8, per_device_batch_size=4)
WORDS = "lion tiger cat dog bird fish wolf bear frog owl".split()


def examples(n):
    """Teacher-answer records (schema `answer`), as the training rule reads them."""
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        ex = ({"instruction": f"Write '{w}' in uppercase letters.", "input": "", "answer": w.upper()}
              if i % 2 else {"instruction": "Repeat the input.", "input": w, "answer": w})
        out.append({"id": f"q{i}", **ex, "model": "teacher", "finish_reason": "stop"})
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_student(tmp_path_factory.mktemp("tiny"), seed=0, **TINY)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples(50)))
    train_main(["--init", str(tiny), "--data", str(data), "--out", str(tmp / "out"),
                "--config-json", json.dumps(CFG), "--log-every", "5"])
    return tmp / "out"


def test_builtin_roundtrip(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert tok.padding_side == "left" and tok.model_max_length == TINY["max_positions"]
    assert model.config.pad_token_id == tok.pad_token_id == model.generation_config.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    # byte-level: every digit its own token, text round-trips exactly
    assert tok.tokenize("1234") == list("1234")
    text = "Sort 5, 3, 9 — naïve!"
    assert tok.decode(tok(text).input_ids) == text


def test_chat_template_alpaca(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    assert user_content("Sort.", "") == "Sort."
    assert prompt_text(tok, "Sort the numbers.", "5, 3, 9") == (
        "### Instruction:\nSort the numbers.\n\n### Input:\n5, 3, 9\n\n### Response:\n")
    assert prompt_text(tok, "What is 37 + 58?", "") == "### Instruction:\nWhat is 37 + 58?\n\n### Response:\n"


def test_labels_mask_prompt(tiny):
    tok = AutoTokenizer.from_pretrained(tiny)
    ex = {"instruction": "Reverse the word 'lion'.", "input": "", "answer": "noil"}
    feats, truncated = encode_example(tok, ex, max_length=256)
    trained = [t for t in feats["labels"] if t != -100]
    assert trained == tok("noil", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert feats["labels"][-len(trained):] == feats["input_ids"][-len(trained):]
    assert tok.decode(feats["input_ids"][:-len(trained)]) == prompt_text(tok, ex["instruction"], "")
    assert not truncated
    feats, truncated = encode_example(tok, ex, max_length=10)
    assert truncated and len(feats["input_ids"]) == 10


def test_training_reduces_loss(trained, tiny, tmp_path):
    log = json.loads((trained / "training_log.json").read_text())
    losses = [s["loss"] for s in log["steps"]]
    assert log["grad_accum"] == 2 and log["optimizer_steps"] == 8 * 7  # ceil(13 batches / 2)
    assert losses[-1] < 0.6 * losses[0]
    AutoModelForCausalLM.from_pretrained(trained)
    assert AutoTokenizer.from_pretrained(trained).chat_template
    # seeded: a rerun gives the same losses
    again = train(tiny, examples(50), tmp_path / "again", TrainConfig(**CFG), device="cpu", log_every=5)
    assert [s["loss"] for s in again["steps"]] == losses


def test_generation_order_seed_and_batching(trained):
    items = [{"instruction": e["instruction"], "input": e["input"]} for e in examples(12)]
    greedy = generate_config(max_new_tokens=8, temperature=0, batch_size=5)
    batched = generate_answers(trained, items, greedy, device="cpu")
    # one at a time: same greedy answers, so batching (length-sorted) restored the order
    assert batched == [generate_answers(trained, [it], greedy, device="cpu")[0] for it in items]
    assert len({r["answer"] for r in batched}) > 1  # answers differ, so order is observable
    assert all(r["finish_reason"] in ("stop", "length") for r in batched)
    sample = generate_config(max_new_tokens=8, temperature=1.0, batch_size=5, seed=3)
    assert generate_answers(trained, items, sample, device="cpu") == generate_answers(trained, items, sample, device="cpu")


def test_unknown_backend(tiny):
    # The vllm backend runs a real server: tests/test_vllm.py.
    items = [{"instruction": "What is 2 + 2?", "input": ""}]
    with pytest.raises(ValueError, match="backend must be"):
        generate_answers(tiny, items, generate_config(backend="tgi"), device="cpu")


def test_batches_are_length_grouped_and_replayable():
    """Each epoch covers every example once, the same way for the same (seed, epoch); grouped by length
    (group=64), little of what is computed is padding (random batches of these lengths pad ~40 %)."""
    import random

    from lionflow.student.train import epoch_batches

    cfg = TrainConfig(**{**CFG, "per_device_batch_size": 8})
    lengths = [random.Random(i).randint(20, 200) for i in range(1000)]
    for group in (1, 64):
        batches = epoch_batches(lengths, 0, cfg, rank=0, world=1, group=group)
        assert sorted(j for b in batches for j in b) == list(range(1000))
        assert batches == epoch_batches(lengths, 0, cfg, 0, 1, group=group) != epoch_batches(lengths, 1, cfg, 0, 1, group)
    computed = sum(max(lengths[j] for j in b) * len(b) for b in batches)
    assert 1 - sum(lengths) / computed < 0.10


def test_loss_on_trained_positions_only_is_the_models_loss(tiny):
    """The LM head applied only where a token is trained gives the model's own loss."""
    import torch

    from lionflow.student.train import collate, loss_of, projects_trained_positions_only

    tokenizer, model = AutoTokenizer.from_pretrained(tiny), AutoModelForCausalLM.from_pretrained(tiny)
    batch = collate([encode_example(tokenizer, ex, 256)[0] for ex in examples(4)], tokenizer.pad_token_id)
    assert projects_trained_positions_only(model)
    with torch.no_grad():
        assert torch.allclose(loss_of(model, batch, True), loss_of(model, batch, False), rtol=1e-5)
