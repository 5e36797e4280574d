"""Student answers from vLLM's OpenAI server, run as a process of its own from a configured command.

vLLM pins its own torch (and numpy), so it never shares the project's environment: the server is
started from `student.generate.vllm_command` - the project's `.venv-vllm` (`make vllm`), an
environment module, or a container - on 127.0.0.1 and an ephemeral port, with a one-off API key.
We wait for `/v1/models`, send every prompt through the async `openai` client (the completions
endpoint with the prompt text rendered by our `prompt_text`, so that both backends see the same
prompt), and always stop the server's whole process group. Student answers are never cached:
they change with every checkpoint.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 30
ERROR_LINES = 5
# The root cause of a failed start sits far above the end of vLLM's output (a worker's ValueError,
# then pages of tracebacks from the processes that waited for it): keep the error lines apart.
_ERROR_LINE = re.compile(r"\b(ERROR|[A-Z]\w*(Error|Exception)):")
STOP_GRACE_S = 20.0


class VLLMServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class VLLMServer:
    """A running server: its OpenAI base URL, the served model name and the key it wants."""
    base_url: str
    model: str
    api_key: str
    command: tuple[str, ...]
    process: subprocess.Popen
    tail: collections.deque
    errors: collections.deque

    def log_tail(self) -> str:
        """The error lines of the server's output, then its last lines."""
        errors = [e for e in self.errors if e not in self.tail]
        return "\n".join([*errors, *(["..."] if errors else []), *self.tail]) or "(no output)"

    def alive(self) -> bool:
        return self.process.poll() is None


def parse_command(command: str | list[str], key: str = "student.generate.vllm_command") -> list[str]:
    """A command line as a list or a shell-quoted string; an existing relative executable path is made absolute."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise ValueError(f"{key} is empty: give the command that runs vLLM's OpenAI server "
                         "(e.g. .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server)")
    if os.sep in argv[0] and not Path(argv[0]).is_absolute():
        argv[0] = str(Path(argv[0]).absolute())
    return argv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream, tail: collections.deque, errors: collections.deque, sink) -> None:
    """Copy the server's output line by line to `sink` (a file or the logger), keeping the last lines."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        tail.append(line)
        if _ERROR_LINE.search(line) and not line.lstrip().startswith(("File ", "raise ")):
            errors.append(line)
        sink(line)
    stream.close()


def _models(base_url: str, api_key: str) -> list[str] | None:
    """The ids /v1/models lists, or None while the server does not answer."""
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return [m["id"] for m in json.load(r)["data"]]
    except (OSError, ValueError, KeyError):   # refused, reset, 5xx while starting, half-written body
        return None


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM when the process that started it dies, even by
    SIGKILL (Linux), so that a killed job leaves no server holding its GPU."""
    import ctypes
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (a cancelled job) raises SystemExit in the main thread, so that the server is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server's process group (its engine processes too), SIGKILL after `grace_s`."""
    if process.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # leftovers of a dead server's group
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("vLLM server (pid %d) ignored SIGTERM for %.0f s: killing it", process.pid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def vllm_server(model_dir, *, command: str | list[str], served_model_name: str, seed: int, dtype: str,
                startup_timeout_s: float, max_model_len: int | None = None, extra_args: list[str] | None = None,
                log_path: str | os.PathLike | None = None) -> Iterator[VLLMServer]:
    """`model_dir` behind vLLM's OpenAI server on 127.0.0.1 and a free port, until the block ends.

    The server's output goes to `log_path` when given, else line by line to this module's logger
    (the rule's log under Snakemake). A server that exits or is not up within `startup_timeout_s`
    raises VLLMServerError naming the command and the end of its output.
    """
    argv = parse_command(command)
    port = free_port()
    api_key = secrets.token_hex(16)   # another user on the node cannot borrow the server
    argv += ["--model", str(model_dir), "--served-model-name", served_model_name, "--host", "127.0.0.1",
             "--port", str(port), "--seed", str(seed), "--dtype", dtype,
             "--disable-uvicorn-access-log",   # one line per answer would drown the rule's log
             *(["--max-model-len", str(max_model_len)] if max_model_len else []), *(extra_args or [])]
    shown = shlex.join(argv)
    # The key travels in the environment, not in argv (which `ps` shows to everybody).
    env = {**os.environ, "VLLM_API_KEY": api_key}
    tail: collections.deque = collections.deque(maxlen=LOG_TAIL_LINES)
    errors: collections.deque = collections.deque(maxlen=ERROR_LINES)
    log_file = open(log_path, "ab") if log_path else None
    log.info("starting vLLM server: %s", shown)
    started = time.monotonic()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True,   # its own process group: stopped as one
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    except OSError as e:
        if log_file:
            log_file.close()
        raise VLLMServerError(f"cannot start the vLLM server (student.generate.vllm_command): {shown}: {e}. "
                              "`make vllm` builds the project's .venv-vllm; on a cluster point "
                              "student.generate.vllm_command at your vLLM module or container") from None
    server_log = logging.getLogger(f"{__name__}.output")
    sink = (lambda line: (log_file.write(line.encode() + b"\n"), log_file.flush())) if log_file \
        else (lambda line: server_log.info("%s", line))
    pump = threading.Thread(target=_pump, args=(process.stdout, tail, errors, sink), daemon=True)
    pump.start()
    server = VLLMServer(f"http://127.0.0.1:{port}/v1", served_model_name, api_key, tuple(argv), process, tail, errors)
    where = f" (its output: {log_path})" if log_path else ""
    with _sigterm_unwinds():
        try:
            while True:
                if process.poll() is not None:
                    pump.join(timeout=5)
                    raise VLLMServerError(f"the vLLM server exited with code {process.returncode} before it was up"
                                          f"{where}: {shown}\n--- last lines of its output ---\n{server.log_tail()}")
                models = _models(server.base_url, api_key)
                if models is not None:
                    if served_model_name not in models:
                        raise VLLMServerError(f"the vLLM server at {server.base_url} serves {models}, "
                                              f"not {served_model_name!r}: {shown}")
                    break
                if time.monotonic() - started > startup_timeout_s:
                    raise VLLMServerError(
                        f"the vLLM server was not up at {server.base_url} within {startup_timeout_s:g} s "
                        f"(student.generate.vllm_startup_timeout_s){where}: {shown}\n"
                        f"--- last lines of its output ---\n{server.log_tail()}")
                time.sleep(0.5)
            log.info("vLLM server up at %s after %.1f s", server.base_url, time.monotonic() - started)
            yield server
        finally:
            _stop(process)
            pump.join(timeout=5)
            if log_file:
                log_file.close()


def complete_prompts(server: VLLMServer, prompts: list[str], *, max_tokens: int, temperature: float, top_p: float,
                     seed: int, max_concurrency: int, request_timeout_s: float) -> list[dict]:
    """[{answer, finish_reason}] for each prompt text, in input order, from the server's completions endpoint.

    Each request gets its own seed (derived from `seed` and its index), so sampled answers are
    reproducible and not correlated across prompts; at most `max_concurrency` are in flight
    (vLLM batches them continuously).
    """
    return asyncio.run(_complete_all(server, prompts, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                     seed=seed, max_concurrency=max_concurrency, request_timeout_s=request_timeout_s))


async def _complete_all(server: VLLMServer, prompts, *, max_tokens, temperature, top_p, seed, max_concurrency,
                        request_timeout_s) -> list[dict]:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, timeout=request_timeout_s,
                                max_retries=2)
    slots = asyncio.Semaphore(max_concurrency)
    results: list[dict | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc="student answers (vLLM)", unit="answer", mininterval=2.0,
               dynamic_ncols=False)

    async def answer(i: int, prompt: str) -> None:
        async with slots:
            try:
                r = await client.completions.create(model=server.model, prompt=prompt, max_tokens=max_tokens,
                                                    temperature=temperature, top_p=top_p,
                                                    seed=seed * 1_000_003 + i)
            except openai.OpenAIError as e:
                state = "" if server.alive() else (
                    f"; the server has exited (code {server.process.returncode}), last lines of its output:\n"
                    f"{server.log_tail()}")
                raise VLLMServerError(f"vLLM server {server.base_url} failed on prompt {i} "
                                      f"({' '.join(prompt.split())[:80]!r}): {type(e).__name__}: {e}{state}") from None
        choice = r.choices[0]
        results[i] = {"answer": choice.text.strip(),
                      "finish_reason": "length" if choice.finish_reason == "length" else "stop"}
        bar.update(1)

    tasks = [asyncio.ensure_future(answer(i, p)) for i, p in enumerate(prompts)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bar.close()
        await client.close()
    return results
