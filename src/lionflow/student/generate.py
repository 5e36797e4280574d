"""Batched answers from the student: left padding, length-sorted batches, seeded.

Two backends: Hugging Face `generate` (default, CPU or GPU) and vLLM (`backend: vllm`): the
checkpoint in vLLM's OpenAI server, a process of its own started from `student.generate.vllm_command`
(vLLM pins its own torch: `make vllm` builds `.venv-vllm`, clusters point at a module or container).
Both get the same chat-template prompts, so answers do not depend on the backend's prompt handling.
"""
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..failures import check_rows
from .device import default_dtype, resolve_device
from .prompting import ensure_chat_template, prompt_text


@dataclass
class GenerateConfig:
    """The validated config's `student.generate` (config/schema.yaml holds the defaults) and the seed."""
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    seed: int
    backend: str  # hf | vllm
    dtype: str  # auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16 | float16
    # backend vllm: the server's command and limits
    vllm_command: str | list[str]
    vllm_args: list[str]
    vllm_max_model_len: int | None
    vllm_startup_timeout_s: float
    vllm_max_concurrency: int
    vllm_request_timeout_s: float

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


def generate_answers(model_dir, items: list[dict], cfg: GenerateConfig, device: str) -> list[dict]:
    """items: dicts with instruction, input. Returns [{answer, finish_reason}] in input order.
    device: `student.device` (auto: the job's GPU when it has one)."""
    if cfg.backend == "vllm":
        return _generate_vllm(model_dir, items, cfg)
    if cfg.backend != "hf":
        raise ValueError(f"student.generate.backend must be 'hf' or 'vllm', not {cfg.backend!r}")
    device = resolve_device(device)
    on_gpu = device.startswith("cuda")
    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(model_dir))
    tokenizer.padding_side = "left"  # decoder-only: generated tokens must follow the prompt
    dtype = default_dtype(device) if cfg.dtype == "auto" else cfg.dtype
    # On CPU, batched decoding with SDPA is no faster than eager attention (batch 128, 2 cores: same
    # speed in float32, 1.5x slower in bfloat16); on GPU SDPA's fused kernels win.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype),
                                                 attn_implementation="sdpa" if on_gpu else "eager").to(device).eval()
    eos = tokenizer.eos_token_id
    sampling = dict(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p) if cfg.do_sample \
        else dict(do_sample=False, temperature=None, top_p=None, top_k=None)

    prompts = [prompt_text(tokenizer, it["instruction"], it.get("input", "")) for it in items]
    lengths = [len(tokenizer(p).input_ids) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # similar lengths share a batch
    torch.manual_seed(cfg.seed)
    results: list[dict | None] = [None] * len(items)
    # A paper-scale cache pool is tens of thousands of prompts: show rate and ETA in the rule's log.
    with tqdm(total=len(items), desc="student answers", unit="answer", mininterval=2.0,
              dynamic_ncols=False) as progress:
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=eos, **sampling)
            for row, i in zip(out[:, enc.input_ids.shape[1]:].tolist(), idx):
                results[i] = decode_answer(tokenizer, row)
            progress.update(len(idx))
    return results


def decode_answer(tokenizer, new_tokens: list[int]) -> dict:
    """{answer, finish_reason} from the token ids generated after a prompt (padding after EOS dropped)."""
    eos = tokenizer.eos_token_id
    stopped = eos in new_tokens
    new_tokens = new_tokens[:new_tokens.index(eos)] if stopped else new_tokens
    return {"answer": tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
            "finish_reason": "stop" if stopped else "length"}


def _generate_vllm(model_dir, items: list[dict], cfg: GenerateConfig) -> list[dict]:
    """The checkpoint in vLLM's OpenAI server, started from student.generate.vllm_command (its own
    environment: a venv, a module, a container) and stopped when the answers are in."""
    from .vllm_server import complete_prompts, vllm_server

    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(model_dir))
    prompts = [prompt_text(tokenizer, it["instruction"], it.get("input", "")) for it in items]
    with vllm_server(model_dir, command=cfg.vllm_command, served_model_name="student", seed=cfg.seed,
                     dtype=cfg.dtype, max_model_len=cfg.vllm_max_model_len, extra_args=cfg.vllm_args,
                     startup_timeout_s=cfg.vllm_startup_timeout_s) as server:
        return complete_prompts(server, prompts, max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_p=cfg.top_p, seed=cfg.seed, max_concurrency=cfg.vllm_max_concurrency,
                                request_timeout_s=cfg.vllm_request_timeout_s)


def answer_records(model_dir, items: list[dict], cfg: GenerateConfig, model: str, device: str) -> list[dict]:
    """The student's answers to `items` (dicts with id, instruction, input) as `answer` artifact records."""
    answers = generate_answers(model_dir, items, cfg, device=device)
    check_rows(model, len(items), len(answers), 0)
    return [{"id": it["id"], "instruction": it["instruction"], "input": it["input"], "answer": a["answer"],
             "model": model, "finish_reason": a["finish_reason"]} for it, a in zip(items, answers)]
