"""The student's one prompt format: its own chat template (set once, when the base student is built).

Training, the student's answers, the judge's questions and lm-eval (`apply_chat_template`) all
render prompts with the checkpoint's tokenizer's chat template. Base models without one get the
Alpaca template shipped with the package (lionflow/student/chat_template.jinja, package data);
`student.chat_template` can force another.
"""
from importlib import resources
from pathlib import Path


def chat_template() -> str:
    """The Alpaca chat template given to a base model without one."""
    return resources.files("lionflow.student").joinpath("chat_template.jinja").read_text(encoding="utf-8")


def user_content(instruction: str, input: str | None = "") -> str:
    # The input field carries the data for many tasks ("sort these numbers"): never drop it.
    if input and input.strip():
        return f"{instruction}\n\n### Input:\n{input}"
    return instruction


def prompt_text(tokenizer, instruction: str, input: str | None = "") -> str:
    messages = [{"role": "user", "content": user_content(instruction, input)}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def ensure_chat_template(tokenizer, setting: str = "auto"):
    """The student's template: `setting` is auto (the model's own, or ours for a model without one) or a
    path to a Jinja chat template that replaces it. Also a pad token for models without one."""
    if setting != "auto":
        path = Path(setting)
        if not path.is_file():
            raise FileNotFoundError(f"student.chat_template: {path} is not a file (auto, or a Jinja chat template)")
        tokenizer.chat_template = path.read_text()
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = chat_template()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
