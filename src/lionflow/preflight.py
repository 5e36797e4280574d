"""Checks run when the workflow is parsed (so `snakemake -n` reports them too), before any job runs
and before anything is paid: every endpoint in use answers, accepts its API key and serves the
role's model with room for its `max_tokens`; the student's base model exists and holds
`student.train.max_length` tokens; every prompt file parses, renders and asks what its stage
parses; with `student.generate.backend: vllm`, the server's executable
exists. Every problem names the role (config key), the endpoint and its URL; all of them are
reported at once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import openai

from .judge import role_configs

BUILTIN = "builtin://oracle"


class PreflightError(ValueError):
    pass


def roles_in_use(config: dict) -> dict[str, dict]:
    """Config key -> role ({endpoint, model, params, ...}) of every LLM role the run calls."""
    llm = config["llm"]
    roles = {f"llm.{name}": llm[name] for name in ("teacher", "referee", "generator")}
    if config["eval"]["judge"]["enabled"]:
        judge = role_configs(llm, config["eval"]["judge"])
        roles |= {"eval.judge": judge["judge"], "eval.judge.reference": judge["reference"]}
    return roles


def check_endpoints(config: dict, timeout_s: float = 10.0) -> list[str]:
    """One GET <base_url>/models per endpoint in use; the problems found, as messages."""
    problems, by_endpoint = [], {}
    for key, role in roles_in_use(config).items():
        by_endpoint.setdefault(role["endpoint"], []).append((key, role))
    for name, roles in by_endpoint.items():
        endpoint = config["llm"]["endpoints"][name]
        url = endpoint["base_url"].rstrip("/")
        who = f"endpoint {name!r} ({url}) of {', '.join(k for k, _ in roles)}"
        if url.startswith("builtin://"):
            if url != BUILTIN:
                problems.append(f"{who}: the only built-in endpoint is {BUILTIN}")
            continue
        if not url.startswith(("http://", "https://")):
            problems.append(f"{who}: base_url must start with http:// or https:// (or be {BUILTIN})")
            continue
        key = None
        if endpoint.get("api_key_env"):
            key = os.environ.get(endpoint["api_key_env"])
            if not key:
                problems.append(f"{who}: the API key variable ${endpoint['api_key_env']} is not set")
                continue
        if not endpoint.get("preflight", True):
            continue
        client = openai.OpenAI(base_url=url, api_key=key or "EMPTY", timeout=timeout_s, max_retries=0)
        try:
            served = {m.id: (m.model_extra or {}) for m in client.models.list()}
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            problems.append(f"{who}: HTTP {e.status_code} - the server refused "
                            + (f"the API key in ${endpoint['api_key_env']}" if key else
                               "a request without an API key (set api_key_env)"))
            continue
        except openai.APIStatusError as e:
            problems.append(f"{who}: GET {url}/models answered HTTP {e.status_code} (is base_url the API "
                            "root, e.g. .../v1? For a provider without a model list set preflight: false)")
            continue
        except openai.APIConnectionError as e:
            problems.append(f"{who}: cannot reach {url}/models ({type(e.__cause__ or e).__name__}); is the "
                            "server up, the host and port right?")
            continue
        except (openai.OpenAIError, ValueError, TypeError, AttributeError) as e:
            problems.append(f"{who}: GET {url}/models did not answer an OpenAI model list ({e})")
            continue
        finally:
            client.close()
        for key, role in roles:
            model = served.get(role["model"])
            if model is None:
                shown = ", ".join(sorted(served)[:10]) + (" ..." if len(served) > 10 else "")
                problems.append(f"{key}.model={role['model']!r} is not served by {who} (it serves: {shown})")
                continue
            context, max_tokens = model.get("max_model_len"), (role.get("params") or {}).get("max_tokens")
            if context and max_tokens and max_tokens >= context:
                problems.append(f"{key}.params.max_tokens={max_tokens} does not fit the context of {role['model']!r} "
                                f"at {who} ({context} tokens, prompt included)")
    return problems


def base_model_context(spec: str) -> int | None:
    """Context length of a local base model (directory or .gguf), None when unknown (builtin, hub id)."""
    path = Path(spec)
    if spec.endswith(".gguf") and path.is_file():
        from gguf import GGUFReader

        fields = GGUFReader(path).fields
        for name, field in fields.items():
            if name.endswith(".context_length"):
                return int(field.parts[field.data[0]][0])
    if path.is_dir() and (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text()).get("max_position_embeddings")
    return None


def check_student(config: dict) -> list[str]:
    student = config["student"]
    spec, problems = student["base_model"], []
    path = Path(spec)
    if spec.endswith(".gguf") and not path.is_file():
        problems.append(f"student.base_model={spec!r}: no such file (make smollm2 fetches SmolLM2-135M-Instruct)")
    elif path.is_absolute() or spec.startswith((".", "models/")) or path.is_dir():
        if not path.is_dir() and not spec.endswith(".gguf"):
            problems.append(f"student.base_model={spec!r}: no such directory")
        elif path.is_dir() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            problems.append(f"student.base_model={spec!r}: the directory holds no weights (*.safetensors, *.bin)")
    if not problems:
        context = base_model_context(spec)
        if context and student["train"]["max_length"] > context:
            problems.append(f"student.train.max_length={student['train']['max_length']} is longer than the context "
                            f"of student.base_model={spec!r} ({context} tokens)")
    lora = student["train"]["lora"]
    if lora["enabled"] and lora["load_in_4bit"] and student["device"] == "cpu":
        problems.append("student.train.lora.load_in_4bit: 4-bit loading needs a GPU and student.device is 'cpu'")
    if student["chat_template"] != "auto" and not Path(student["chat_template"]).is_file():
        problems.append(f"student.chat_template={student['chat_template']!r}: no such file (auto, or a Jinja file)")
    return problems


def check_vllm(config: dict) -> list[str]:
    """backend vllm: the server's executable exists (when given as a path: a bare name such as
    `apptainer` may exist on the compute nodes only) and the answers fit the server's context."""
    generate = config["student"]["generate"]
    if generate["backend"] != "vllm":
        return []
    from .student.vllm_server import parse_command

    problems = []
    try:
        executable = parse_command(generate["vllm_command"])[0]
    except ValueError as e:
        return [str(e)]
    if os.sep in executable and not Path(executable).is_file():
        problems.append(f"student.generate.vllm_command: {executable} does not exist (`make vllm` builds the "
                        "project's .venv-vllm; on a cluster give your vLLM environment's python or a container)")
    max_len, max_new = generate["vllm_max_model_len"], generate["max_new_tokens"]
    if max_len and max_new >= max_len:
        problems.append(f"student.generate.max_new_tokens={max_new} does not fit student.generate.vllm_max_model_len="
                        f"{max_len} (prompt included)")
    return problems


# Variables each kind of prompt is rendered with (the stage fills them); which of them must change the request.
PROMPT_KINDS = {
    "answer": (("instruction", "input"), "instruction"),
    "generate": (("instruction", "input"), "instruction"),
    "score": (("instruction", "input", "answer_1", "answer_2"), "answer_1"),
}


def check_prompts(config: dict) -> list[str]:
    """Every prompt file in use parses, renders with exactly the variables its stage fills, makes a
    different request for a different instruction (answer), and asks a referee/judge for the score
    lines our parser reads ("Assistant 1: <score>", "Assistant 2: <score>")."""
    from .prompts import PromptTemplate

    llm, judge = config["llm"], config["eval"]["judge"]
    prompts = [("llm.teacher.prompt", llm["teacher"]["prompt"], "answer"),
               ("llm.referee.prompt", llm["referee"]["prompt"], "score"),
               ("llm.generator.prompt_hard", llm["generator"]["prompt_hard"], "generate"),
               ("llm.generator.prompt_easy", llm["generator"]["prompt_easy"], "generate")]
    if judge["enabled"]:
        roles = role_configs(llm, judge)
        prompts += [("eval.judge.prompt", judge["prompt"], "score"),
                    ("eval.judge.reference.prompt", roles["reference"]["prompt"], "answer")]
    problems = []
    for key, path, kind in prompts:
        names, varying = PROMPT_KINDS[kind]
        try:
            template = PromptTemplate.load(path)
            a = template.messages(**{n: f"<{n} A>" for n in names})
            b = template.messages(**{n: f"<{n} A>" if n != varying else f"<{n} B>" for n in names})
        except FileNotFoundError:
            problems.append(f"{key}={path!r}: no such file")
            continue
        except (ValueError, OSError) as e:  # YAML, template syntax (with its line), undefined variable
            problems.append(f"{key}: {e}" if str(e).startswith(str(path)) else f"{key}={path!r}: {e}")
            continue
        if a == b:
            problems.append(f"{key}={path!r}: the request does not change with {{{{ {varying} }}}}: every "
                            f"{'instruction' if kind != 'score' else 'pair'} would get the same request")
        text = "\n".join(m["content"] for m in a)
        if kind == "score" and not ("Assistant 1" in text and "Assistant 2" in text):
            problems.append(f"{key}={path!r}: does not ask for the score lines the parser reads "
                            "('Assistant 1: <score>' and 'Assistant 2: <score>'); every reply would fail after "
                            "being paid for")
    return problems


def preflight(config: dict) -> None:
    """Raise PreflightError listing every problem found, before any job runs."""
    problems = check_student(config) + check_vllm(config) + check_prompts(config)
    if not config["llm"].get("offline"):
        problems += check_endpoints(config)
    if problems:
        raise PreflightError(f"preflight: {len(problems)} problem(s), nothing was run or paid:\n  - "
                             + "\n  - ".join(problems))
