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


def test_batches_are_random_and_replayable():
    """Each epoch covers every example once, the same way for the same (seed, epoch), another way in the next."""
    from lionflow.student.train import epoch_batches

    cfg = TrainConfig(**{**CFG, "per_device_batch_size": 8})
    batches = epoch_batches(1000, 0, cfg, rank=0, world=1)
    assert sorted(j for b in batches for j in b) == list(range(1000)) and {len(b) for b in batches} == {8}
    assert batches == epoch_batches(1000, 0, cfg, 0, 1) != epoch_batches(1000, 1, cfg, 0, 1)


def test_a_packed_batch_has_the_padded_batchs_loss_and_gradients(tmp_path):
    """One row of examples kept apart (packing.py) gives the padded batch's loss and gradients, with
    grouped-query attention (SmolLM2's 9 query heads share 3 key/value heads; here 4 share 2), computes
    no padding, and the model's own attention is back afterwards."""
    import torch

    from lionflow.student import packing
    from lionflow.student.train import collate, loss_of

    d = build_tiny_student(tmp_path / "gqa", seed=0, **{**TINY, "num_heads": 4}, num_kv_heads=2)
    tokenizer, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    features = [encode_example(tokenizer, ex, 256)[0] for ex in examples(6)]
    assert len({len(f["input_ids"]) for f in features}) > 1    # padded, the batch would compute padding

    def loss_and_grads(batch):
        model.zero_grad()
        loss = loss_of(model, batch, True)
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    padded, padded_grads = loss_and_grads(collate(features, tokenizer.pad_token_id))
    before = packing.enable(model)
    batch = packing.pack(features)
    assert batch["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    packed, packed_grads = loss_and_grads(batch)
    assert packed == pytest.approx(padded, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(packed_grads, padded_grads))
    # without bounds the packed attention is the model's own (a padded batch through the same model)
    assert loss_and_grads(collate(features, tokenizer.pad_token_id))[0] == pytest.approx(padded, rel=1e-6)
    packing.disable(model, before)
    assert model.config._attn_implementation == before == "sdpa"


def test_packed_and_padded_training_follow_the_same_losses(tiny, tmp_path):
    """The training loop with `packing` (the default) trains the same steps to the same losses as with
    padded batches, and computes no padding."""
    logs = {p: train(tiny, examples(24), tmp_path / str(p), TrainConfig(**{**CFG, "epochs": 2, "packing": p}),
                     device="cpu") for p in (True, False)}
    assert logs[True]["packed"] and not logs[False]["packed"]
    assert logs[True]["computed_tokens"] == logs[True]["trained_tokens"] == logs[False]["trained_tokens"]
    assert logs[False]["computed_tokens"] > logs[False]["trained_tokens"]
    assert [s["loss"] for s in logs[True]["steps"]] == pytest.approx([s["loss"] for s in logs[False]["steps"]], rel=1e-4)


def test_loss_on_trained_positions_only_is_the_models_loss(tiny):
    """The LM head applied only where a token is trained gives the model's own loss."""
    import torch

    from lionflow.student.train import collate, loss_of, projects_trained_positions_only

    tokenizer, model = AutoTokenizer.from_pretrained(tiny), AutoModelForCausalLM.from_pretrained(tiny)
    batch = collate([encode_example(tokenizer, ex, 256)[0] for ex in examples(4)], tokenizer.pad_token_id)
    assert projects_trained_positions_only(model)
    with torch.no_grad():
        assert torch.allclose(loss_of(model, batch, True), loss_of(model, batch, False), rtol=1e-5)
