"""The student's prompt format (Alpaca), defined once in resources/prompts/student_chat_template.jinja."""
import os
from pathlib import Path

RESOURCES = Path(os.environ.get("LIONFLOW_RESOURCES", Path(__file__).resolve().parents[3] / "resources"))
CHAT_TEMPLATE_PATH = RESOURCES / "prompts" / "student_chat_template.jinja"


def chat_template() -> str:
    return CHAT_TEMPLATE_PATH.read_text()


def user_content(instruction: str, input: str | None = "") -> str:
    # The input field carries the data for many tasks ("sort these numbers"): never drop it.
    if input and input.strip():
        return f"{instruction}\n\n### Input:\n{input}"
    return instruction


def prompt_text(tokenizer, instruction: str, input: str | None = "") -> str:
    messages = [{"role": "user", "content": user_content(instruction, input)}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def ensure_chat_template(tokenizer):
    """Base models ship without a chat template (or pad token); give them ours."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
