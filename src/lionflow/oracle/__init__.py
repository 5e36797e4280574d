"""A deterministic stand-in for the proprietary LLM in the Lion pipeline ("oracle").

It speaks the OpenAI chat-completions API (``app.create_app`` for in-process use
through an ASGI transport, ``python -m lionflow.oracle`` over localhost) and plays
the three roles of the paper, chosen from the last user message:

* referee   -- it contains "[The Start of Assistant 1's Answer]": grades both
  answers against the true answer, scores 1..9, +1 for the answer shown first
  (a deliberate position bias), and ends with "Assistant 1: <n>" / "Assistant 2: <n>";
* generator -- it contains "#Given Prompt#": writes one new self-contained
  instruction, same family and same/higher level ("hard"), or a rarer family
  when the prompt says "rarer" ("easy"); reproducible per (prompt, seed);
* teacher   -- anything else: the instruction (plus "\\n\\nInput:\\n<input>").

Limits, plainly: it only understands the instructions produced by
``tasks.sample_problem`` (fixed English templates, see ``tasks.FAMILIES``) and
the markers of our default prompts in resources/prompts/. It does not understand
arbitrary prompts: a teacher request it cannot parse gets "I cannot solve this
task.", a referee request with an unknown instruction rates both answers
equally, a generator request with an unknown example invents a random task.
A "token" is a whitespace-separated word; temperature and top_p are ignored;
only n=1 is supported.

``URL`` is the base_url of an endpoint served by it in-process; ``transports()`` gives whoever
builds LLM clients from config (lionflow.smk.llm_for) the transport for it: lionflow.llm itself
knows nothing of the oracle.
"""

URL = "builtin://oracle"


def transports() -> dict:
    """base_url -> a factory of the in-process transport that serves it."""
    from .app import transport

    return {URL: transport}
