"""Checks run when the workflow is parsed (so `snakemake -n` reports them too), before any job runs
and before anything is paid: every endpoint in use answers, accepts its API key and serves the
role's model with room for its `max_tokens`; the student's base model exists and holds
`student.train.max_length` tokens; every prompt file parses, renders and asks what its stage
parses; with `student.generate.backend: vllm`, the server's executable
exists; every model in use has a price when a budget is set; the lm-eval tasks exist; the seed file
is UTF-8 JSONL whose instructions fit the student; the cache and results directories can be
written; the checkpoints already built are whole. Every problem names the config key (the role,
the endpoint and its URL) or the file and line; all of them are reported at once.
"""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import openai

from .judge import role_configs
from .layout import iteration_dirs, run_dir, student_dir
from .oracle import URL as BUILTIN
from .student.facts import base_model_context, token_counter, tokenizer_file
from .student.prompting import user_content


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
    elif not spec.startswith("builtin:"):
        problems += check_hub_model(spec)
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


def check_hub_model(spec: str, timeout_s: float = 10.0) -> list[str]:
    """A Hugging Face model id: in the local HF cache, or (online) known to the hub, found at once."""
    import huggingface_hub
    from huggingface_hub.utils import HFValidationError

    who = f"student.base_model={spec!r}"
    try:
        if isinstance(huggingface_hub.try_to_load_from_cache(spec, "config.json"), str):
            return []
    except HFValidationError:
        return [f"{who}: neither builtin:tiny, a local directory or .gguf file, nor a Hugging Face model id"]
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return [f"{who}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set (download it first, "
                "e.g. `hf download <id>`, or give a local directory)"]
    try:
        huggingface_hub.model_info(spec, timeout=timeout_s)
    except huggingface_hub.errors.RepositoryNotFoundError:
        return [f"{who}: no such model on the Hugging Face hub (or it is gated: log in with `hf auth login`)"]
    except Exception as e:   # connection refused, DNS, timeout: the hub cannot be reached from here
        return [f"{who}: not in the local Hugging Face cache and the hub cannot be reached ({type(e).__name__}); "
                "download it where there is network, or give a local directory"]
    return []


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


# Variables each kind of prompt is rendered with (the stage fills them): the request must change with each.
PROMPT_KINDS = {
    "answer": ("instruction", "input"),
    "generate": ("instruction", "input"),
    "score": ("instruction", "input", "answer_1", "answer_2"),
}
# A score prompt asks for "Assistant 1: <score>" (or [score], {score}, X, N, a number, ...) and the same for 2.
_SCORE_ASK = re.compile(r"assistant\s*([12])\s*(?:score\s*)?[:=]\s*\**\s*(?:<[^<>\n]{1,40}>|\[[^\[\]\n]{1,40}\]|"
                        r"\{[^{}\n]{1,40}\}|\(?score\)?|[xn]\b|\d+(?:\.\d+)?)", re.IGNORECASE)


def check_prompts(config: dict) -> list[str]:
    """Every prompt file in use parses, renders with exactly the variables its stage fills, makes a
    different request when any one of them changes (the teacher's and the reference's: the
    instruction and its input), and asks a referee/judge for the exact score lines our parser reads
    ("Assistant 1: <score>", "Assistant 2: <score>"), not merely names the assistants."""
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
        names = PROMPT_KINDS[kind]
        try:
            template = PromptTemplate.load(path)
            a = template.messages(**{n: f"<{n} A>" for n in names})
            unchanged = [n for n in names if template.messages(**{m: f"<{m} {'B' if m == n else 'A'}>"
                                                                  for m in names}) == a]
        except FileNotFoundError:
            problems.append(f"{key}={path!r}: no such file")
            continue
        except (ValueError, OSError) as e:  # YAML, template syntax (with its line), undefined variable
            problems.append(f"{key}: {e}" if str(e).startswith(str(path)) else f"{key}={path!r}: {e}")
            continue
        for name in unchanged:
            problems.append(f"{key}={path!r}: the request does not change with {{{{ {name} }}}}: "
                            + ("every instruction would get the same request" if name == "instruction" else
                               f"every {'instruction' if kind != 'score' else 'pair'} would be sent without its "
                               f"{name}, and paid for"))
        text = "\n".join(m["content"] for m in a)
        if kind == "score" and set(_SCORE_ASK.findall(text)) != {"1", "2"}:
            problems.append(f"{key}={path!r}: does not ask for the score lines the parser reads "
                            "('Assistant 1: <score>' and 'Assistant 2: <score>', each on its own line); every "
                            "reply would fail after being paid for")
    return problems


# Parameters a server may understand but the openai client does not take as arguments: they go in extra_body.
SERVER_ONLY_PARAMS = ("top_k", "min_p", "repetition_penalty", "length_penalty", "min_tokens", "best_of",
                      "use_beam_search", "ignore_eos", "skip_special_tokens", "guided_json", "guided_regex",
                      "guided_choice", "chat_template_kwargs")
SET_BY_THE_STAGE = ("model", "messages", "stream", "n")


def client_params() -> set[str]:
    """The keyword arguments the openai client's chat.completions.create accepts."""
    import inspect

    from openai.resources.chat.completions import AsyncCompletions

    return {name for name, p in inspect.signature(AsyncCompletions.create).parameters.items()
            if p.kind == p.KEYWORD_ONLY}


def check_params(config: dict) -> list[str]:
    """Every role's sampling parameters are arguments the openai client accepts (a server-only one, such as
    vLLM's top_k, goes under params.extra_body, sent in the request body as it is)."""
    import difflib

    accepted, problems = client_params(), []
    for key, role in roles_in_use(config).items():
        for name, value in (role.get("params") or {}).items():
            if name in SET_BY_THE_STAGE:
                problems.append(f"{key}.params.{name}: set by the stage, not a sampling parameter (remove it)")
            elif name == "extra_body" and not isinstance(value, dict):
                problems.append(f"{key}.params.extra_body: must be a mapping of server parameters ({{top_k: 20}})")
            elif name not in accepted:
                close = difflib.get_close_matches(name, sorted(accepted - {"model", "messages"}), n=1)
                problems.append(
                    f"{key}.params.{name}: not a parameter of the openai client (it would fail every request)"
                    + (f"; did you mean {close[0]}?" if close else "")
                    + (f"; a parameter only the server knows goes under {key}.params.extra_body "
                       f"(extra_body: {{{name}: {value!r}}})" if name in SERVER_ONLY_PARAMS or not close else ""))
    return problems


def check_prices(config: dict) -> list[str]:
    """With llm.budget_usd set, every model in use needs a price (its cost could not be estimated)."""
    llm = config["llm"]
    if llm.get("budget_usd") is None:
        return []
    prices = llm.get("prices") or {}
    return [f"{key}.model={role['model']!r} has no entry in llm.prices, and llm.budget_usd is set: its cost "
            "could not be estimated (give input_per_mtok and output_per_mtok; 0 for a free endpoint)"
            for key, role in roles_in_use(config).items() if role["model"] not in prices]


def check_lm_eval(config: dict) -> list[str]:
    """eval.lm_eval: the include path exists and every task or group is defined there or by lm-eval."""
    lm_eval = config["eval"]["lm_eval"]
    root = Path(lm_eval["include_path"])
    if not root.is_dir():
        return [f"eval.lm_eval.include_path={str(root)!r}: no such directory"]
    names = set()
    for path in root.rglob("*.yaml"):
        names.update(re.findall(r"^(?:task|group):\s*([\w.-]+)\s*$", path.read_text(errors="replace"), re.M))
    missing = [t for t in lm_eval["tasks"] if t not in names]
    if missing:   # not defined locally: ask lm-eval's registry (slow: it reads every task YAML it ships)
        from lm_eval.tasks import TaskManager

        known = set(TaskManager(include_path=str(root)).all_tasks)
        missing = [t for t in missing if t not in known]
    return [f"eval.lm_eval.tasks: {t!r} is neither defined under eval.lm_eval.include_path={str(root)!r} nor an "
            "lm-eval task or group" for t in missing]


def check_judge_questions(config: dict) -> list[str]:
    """eval.judge.questions: valid question records (the reader names the file and line)."""
    from .artifacts import ArtifactError, iter_jsonl

    judge = config["eval"]["judge"]
    if not judge["enabled"]:
        return []
    try:
        if not any(True for _ in iter_jsonl(judge["questions"], "eval_question")):
            return [f"eval.judge.questions={judge['questions']!r}: the file holds no question"]
    except FileNotFoundError:
        return [f"eval.judge.questions={judge['questions']!r}: no such file"]
    except ArtifactError as e:
        return [f"eval.judge.questions: {e}"]
    return []


def _student_token_counter(config: dict):
    """text -> tokens with the base student's tokenizer where it is a local file (read once, see
    lionflow.student.facts), else None."""
    spec = config["student"]["base_model"]
    try:
        if path := tokenizer_file(student_dir(config["run"], "base")) or tokenizer_file(spec):
            return token_counter(path)
        if spec.startswith("builtin:"):
            from .student.builtin import build_tokenizer

            tokenizer = build_tokenizer()
        else:   # a hub id: its tokenizer from the local HF cache, if there
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=True)
        return lambda text: len(tokenizer(text)["input_ids"])
    except (OSError, ValueError):
        return None


ANSWER_ROOM = 16   # tokens of student.train.max_length a seed's rendered prompt must leave for an answer


def _student_prompt(config: dict, model: bool = True):
    """user content -> the prompt text the student trains on (its chat template, as
    lionflow.student.prompting renders it), from the template file alone (no model is loaded); None
    when it cannot be rendered here. model False: without looking into the model (the forced template,
    else the Alpaca one), for a first, cheap bound."""
    import jinja2.sandbox

    from .student.prompting import chat_template as alpaca

    setting, spec = config["student"]["chat_template"], config["student"]["base_model"]
    try:
        source = Path(setting).read_text() if setting != "auto" else None
        for tok in ((tokenizer_file(student_dir(config["run"], "base")), tokenizer_file(spec))
                    if model and source is None else ()):
            if tok is not None and (tok.parent / "chat_template.jinja").is_file():
                source = (tok.parent / "chat_template.jinja").read_text()
            elif tok is not None and (tok.parent / "tokenizer_config.json").is_file():
                source = json.loads((tok.parent / "tokenizer_config.json").read_text()).get("chat_template")
            if isinstance(source, str):
                break
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = lambda message: (_ for _ in ()).throw(jinja2.TemplateError(message))
        template = env.from_string(source if isinstance(source, str) else alpaca())
        render = lambda content: template.render(messages=[{"role": "user", "content": content}],
                                                 add_generation_prompt=True, bos_token="", eos_token="")
        render("x")
        return render
    except (OSError, ValueError, jinja2.TemplateError):
        return None


def check_seeds(config: dict) -> list[str]:
    """data.seed_instructions: UTF-8 JSONL of valid records (the artifact reader names file and line),
    each instruction, rendered in the student's prompt template, leaving at least ANSWER_ROOM tokens of
    student.train.max_length for an answer (else it is paid for, then cut away in training)."""
    from .artifacts import ArtifactError, iter_jsonl

    path, max_length = config["data"]["seed_instructions"], config["student"]["train"]["max_length"]
    try:
        records = list(iter_jsonl(path, "seed_instruction", numbered=True))
    except FileNotFoundError:
        return [f"data.seed_instructions={path!r}: no such file"]
    except ArtifactError as e:
        return [f"data.seed_instructions: {e}"]
    if not records:
        return [f"data.seed_instructions={path!r}: the file holds no instruction"]
    # A token holds at least one byte of text for every tokenizer we meet (byte-level BPE, SentencePiece
    # with byte fallback: at most one token per byte, plus a word-start marker): only longer texts are counted.
    text = lambda r: r["instruction"] + "\n" + (r.get("input") or "")
    # A first bound without reading the model: the prompt's bytes (at least its tokens) in the Alpaca (or the
    # forced) template, + words (word-start markers) + room for a model's own, longer template.
    cheap = _student_prompt(config, model=False) or (lambda content: content)
    bound = lambda r: (len(cheap(user_content(r["instruction"], r.get("input"))).encode("utf-8"))
                       + len(text(r).split()) + 64)
    close = [(n, r) for n, r in records if bound(r) + ANSWER_ROOM > max_length]
    if not close:
        return []
    count = _student_token_counter(config)
    render = _student_prompt(config) if count else None
    problems = []
    for lineno, record in close:
        n = (count(render(user_content(record["instruction"], record.get("input")))) if render else
             count(text(record)) if count else len(text(record).encode("utf-8")))
        if n + ANSWER_ROOM > max_length:
            problems.append(f"{path}:{lineno}: instruction {record['id']!r} is {n} tokens"
                            + (" in the student's prompt template" if render else " (without the prompt template)"
                               if count else " (bytes: the student's tokenizer is not available yet)")
                            + f", leaving less than {ANSWER_ROOM} tokens of student.train.max_length={max_length} "
                            "for an answer: it would be paid for and then cut away in training (shorten it, drop "
                            "it, or raise max_length)")
    return problems[:10] + ([f"... and {len(problems) - 10} more too-long seed instructions"] if len(problems) > 10 else [])


def _writable(key: str, path: Path) -> str | None:
    """Probe `path`, or where it would be created (a dry run creates nothing), symlinks resolved."""
    try:
        path = path.resolve()
    except (OSError, RuntimeError) as e:   # a symlink loop: RuntimeError before Python 3.13, OSError since
        return f"{key}={str(path)!r}: cannot be resolved ({getattr(e, 'strerror', None) or e}; a symlink loop?)"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{key}={str(path)!r}: {existing} is not a directory"
    try:
        probe = existing / f".preflight-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"{key}={str(path)!r}: cannot be written ({e.strerror or e})"
    return None


def check_writable(config: dict) -> list[str]:
    """The response cache and the run's results can be written (an answer that cannot be stored is paid twice)."""
    checks = [("llm.cache_dir", Path(config["llm"]["cache_dir"])), ("run (results/<run>)", Path(run_dir(config["run"])))]
    if config["llm"]["ledger_dir"]:
        checks.append(("llm.ledger_dir", Path(config["llm"]["ledger_dir"])))
    return [p for key, path in checks if (p := _writable(key, path))]


CHECKPOINT_RULES = {"base_student": "build_base_student", "student": "train_student"}


def check_checkpoints(config: dict) -> list[str]:
    """A checkpoint Snakemake considers built (no incomplete marker) holds config, weights and tokenizer;
    a damaged one would otherwise count as done ("Nothing to be done") and fail later jobs."""
    problems = []
    for ckpt in [Path(student_dir(config["run"], "base")),
                 *(p / "student" for _, p in iteration_dirs(run_dir(config["run"])))]:
        if not ckpt.is_dir():
            continue
        marker = Path(".snakemake/incomplete") / base64.urlsafe_b64encode(str(ckpt).encode()).decode()
        if marker.exists():   # a job died writing it: Snakemake reruns it (--rerun-incomplete)
            continue
        missing = [what for what, globs in (("config.json", ["config.json"]),
                                            ("weights", ["*.safetensors", "*.bin"]),
                                            ("tokenizer", ["tokenizer.json", "tokenizer_config.json"]))
                   if not any(any(ckpt.glob(g)) for g in globs)]
        if missing:
            problems.append(f"{ckpt}: a damaged checkpoint (no {', no '.join(missing)}); rebuild it with "
                            f"`rm -r {ckpt}` and rerun (Snakemake reruns {CHECKPOINT_RULES[ckpt.name]} and what "
                            "depends on it)")
    return problems


def check_batch(config: dict) -> list[str]:
    train = config["student"]["train"]
    if train["effective_batch_size"] % train["per_device_batch_size"]:
        return [f"student.train.effective_batch_size={train['effective_batch_size']} is not a multiple of "
                f"student.train.per_device_batch_size={train['per_device_batch_size']} (x the GPUs of the job)"]
    return []


def check_refusal_patterns(config: dict) -> list[str]:
    """llm.answer_checks.refusal_patterns: each a Python regular expression."""
    problems = []
    for i, pattern in enumerate(config["llm"]["answer_checks"]["refusal_patterns"]):
        try:
            re.compile(pattern)
        except re.error as e:
            problems.append(f"llm.answer_checks.refusal_patterns[{i}]={pattern!r}: not a regular expression ({e})")
    return problems


def check_next_pools(config: dict) -> list[str]:
    """With next_train_pool new, the next iterations need new instructions to train on."""
    gen = config["generation"]
    if config["iterations"] > 1 and config["pools"]["next_train_pool"] == "new" and gen["new_hard"] + gen["new_easy"] == 0:
        return ["generation.new_hard=0 and generation.new_easy=0 with pools.next_train_pool=new: iteration 2 would "
                "have nothing to train on (ask for new instructions, set next_train_pool: all, or iterations: 1)"]
    return []


def check_roles(config: dict) -> list[str]:
    """Every role names a declared endpoint (the other checks need it)."""
    llm = config["llm"]
    return [f"llm.{role}.endpoint={llm[role]['endpoint']!r} is not one of llm.endpoints ({', '.join(llm['endpoints'])})"
            for role in ("teacher", "referee", "generator") if llm[role]["endpoint"] not in llm["endpoints"]]


def preflight(config: dict) -> None:
    """Raise PreflightError listing every problem found, before any job runs."""
    if problems := check_roles(config):
        raise PreflightError("preflight: " + "; ".join(problems))
    problems = (check_student(config) + check_vllm(config) + check_prompts(config) + check_params(config)
                + check_next_pools(config) + check_refusal_patterns(config) + check_prices(config)
                + check_lm_eval(config) + check_batch(config) + check_writable(config) + check_checkpoints(config)
                + check_seeds(config) + check_judge_questions(config))
    if not config["llm"].get("offline"):
        problems += check_endpoints(config)
    if problems:
        raise PreflightError(f"preflight: {len(problems)} problem(s), nothing was run or paid:\n  - "
                             + "\n  - ".join(problems))
