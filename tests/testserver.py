"""An OpenAI-compatible test server over the oracle, with the misbehaviour of a real provider.

Configurable latency, concurrent capacity (requests beyond it wait in a queue, as on a busy
vLLM server), RPM/TPM rate limits answered with 429 + Retry-After, fault injection (429, 500,
503, timeouts, malformed JSON, truncated bodies, dropped connections, an HTML page or JSON without
`choices` answered 200), answers rewritten (`content`, `finish_reason`: a teacher that cuts, returns
nothing or refuses), a request log, and the
Batch API (files + batches) so that batch mode is tested for real. Test machinery: it lives
with the tests (aiohttp and psutil come with the `test` extra), never in the runtime package. Answers can carry a
`system_fingerprint` and a served model name (change them mid-run through ``POST config`` or
``reconfigure``: a new teacher version), and ``models`` makes other model names a 404.

Built on aiohttp rather than the oracle's raw ASGI app because dropping a connection or
truncating a body needs the transport itself. Control and inspection endpoints live under
``/_testserver/``: ``GET log`` (one record per request), ``POST hold`` ({"hold": true} keeps
new chat requests waiting unanswered, for crash tests; {"allow": N} answers N more, then holds),
``POST config`` (patch the config).

A request counts as *paid* (log outcome ``ok``) only when its complete 200 response was
written to a connected client: what the client could have stored. ``python
tests/testserver.py --port 8000 --latency-s 0.2 --capacity 64 --fault-rate 0.2`` serves it;
``TestServer(config)`` runs it on a background thread for tests.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass

from aiohttp import web

from lionflow.oracle.app import BadRequest, completion, error_body

FAULT_KINDS = ("429", "500", "503", "timeout", "malformed_json", "truncated", "drop", "html", "no_choices")


class _UnknownModel(Exception):
    pass


class _NoAnswer(ConnectionResetError):
    """Raised to end a handler whose connection was dropped on purpose (or by the client)."""


class _QuietNoAnswer(logging.Filter):
    def filter(self, record):  # aiohttp logs a traceback for every handler that raises; ours are intended
        return not (record.exc_info and isinstance(record.exc_info[1], _NoAnswer))


logging.getLogger("aiohttp.server").addFilter(_QuietNoAnswer())


@dataclass
class ServerConfig:
    latency_s: float = 0.0            # time to answer one chat request
    capacity: int | None = None       # chat requests served at once; the rest queue
    rpm: float | None = None          # requests per minute; beyond: 429 + Retry-After
    tpm: float | None = None          # tokens (prompt + completion) per minute; beyond: 429
    burst_s: float = 1.0              # rate-limit buckets hold this many seconds of their rate
    fault_rate: float = 0.0           # fraction of chat requests that get a fault
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    max_faults_per_request: int = 2   # a given request body is faulted at most this often
    hang_s: float = 30.0              # how long a 'timeout' fault holds the request unanswered
    api_key: str | None = None        # when set, 'Authorization: Bearer <key>' is required
    batch_delay_s: float = 0.5        # time a batch takes to complete
    seed: int = 0
    system_fingerprint: str | None = None   # sent with every answer when set (change it mid-run: a new teacher)
    served_model: str | None = None   # the model name answers carry; None - the one asked for
    models: tuple[str, ...] | None = None   # models served; another is answered 404 model_not_found (None: any)
    max_model_len: int | None = None   # the context the model list reports, as vLLM does (None: not reported)
    content: str | None = None        # every answer's text, when set (e.g. "" or a refusal)
    finish_reason: str | None = None  # every answer's finish_reason, when set (e.g. "length")

    def __post_init__(self):
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")


class _Bucket:
    """Token bucket: `rate` per second, holding at most `capacity`."""

    def __init__(self, per_minute: float, burst_s: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level, self.t = self.capacity, time.monotonic()

    def take(self, amount: float) -> float:
        """Take `amount` and return 0, or take nothing and return seconds until it would fit."""
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now
        need = min(amount, self.capacity)
        if self.level >= need:
            self.level -= amount
            return 0.0
        return (need - self.level) / self.rate


def body_key(body: bytes) -> str:
    """Identity of a chat request at the server: its canonical JSON body."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        canonical = body.decode("latin-1")
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json(status: int, payload: dict, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type="application/json",
                        headers=headers)


class _Server:
    def __init__(self, config: ServerConfig, log_path: str | None = None):
        self.config = config
        self.rng = random.Random(config.seed)
        self.log: list[dict] = []
        self.log_file = open(log_path, "a", buffering=1) if log_path else None
        self.faults_given: dict[str, int] = {}
        self.faults_picked = -1
        self.allowance: int | None = None  # None = answering; N = answer N more, then hold the rest
        self.waiting = 0                   # requests held unanswered right now
        self._reset_limits()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}

    def _reset_limits(self):
        c = self.config
        self.slots = asyncio.Semaphore(c.capacity) if c.capacity else None
        self.rpm = _Bucket(c.rpm, c.burst_s) if c.rpm else None
        self.tpm = _Bucket(c.tpm, c.burst_s) if c.tpm else None

    def record(self, **entry):
        entry["t"] = time.time()
        self.log.append(entry)
        if self.log_file:
            self.log_file.write(json.dumps(entry) + "\n")

    # ------------------------------------------------------------------ chat completions
    def _authorized(self, request: web.Request) -> bool:
        key = self.config.api_key
        return key is None or request.headers.get("Authorization") == f"Bearer {key}"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = body_key(body)
        retry = request.headers.get("x-stainless-retry-count", "0")
        log = dict(path="/v1/chat/completions", key=key, retry_count=int(retry) if retry.isdigit() else 0)
        if not self._authorized(request):
            self.record(**log, outcome="unauthorized", status=401)
            return _json(*error_body(401, "invalid API key", "authentication_error"))
        try:
            req = json.loads(body or b"null")
            if isinstance(req, dict):
                log["fields"] = sorted(req)      # the request's parameters, as the server received them
            reply = self._reply(req)
        except (json.JSONDecodeError, UnicodeDecodeError, BadRequest) as e:
            self.record(**log, outcome="bad_request", status=400)
            return _json(*error_body(400, str(e) if isinstance(e, BadRequest) else "malformed JSON body"))
        except _UnknownModel as e:
            self.record(**log, outcome="unknown_model", status=404)
            return _json(*error_body(404, f"The model `{e}` does not exist or you do not have access to it.",
                                 "invalid_request_error"))
        tokens = reply["usage"]["total_tokens"]
        for bucket, what in ((self.rpm, "requests"), (self.tpm, "tokens")):
            wait = bucket.take(1 if what == "requests" else tokens) if bucket else 0.0
            if wait:
                self.record(**log, outcome="rate_limited", status=429, limit=what, retry_after_s=wait)
                status, payload = error_body(429, f"Rate limit reached for {what} per minute", what)
                return _json(status, payload, {"retry-after": str(math.ceil(wait)),
                                               "retry-after-ms": str(int(wait * 1000) + 1)})
        fault = self._pick_fault(key)
        if fault in ("429", "500", "503"):
            self.record(**log, outcome=f"fault:{fault}", status=int(fault))
            return _json(*error_body(int(fault), f"injected fault {fault}", "server_error"),
                         {"retry-after-ms": "50"} if fault == "429" else None)
        if self.slots:
            async with self.slots:
                return await self._answer(request, reply, fault, log)
        return await self._answer(request, reply, fault, log)

    def _reply(self, req) -> dict:
        c = self.config
        if c.models is not None and isinstance(req, dict) and req.get("model") not in c.models:
            raise _UnknownModel(req.get("model"))
        reply = completion(req)
        if c.served_model:
            reply["model"] = c.served_model
        if c.system_fingerprint is not None:
            reply["system_fingerprint"] = c.system_fingerprint
        if c.content is not None:
            reply["choices"][0]["message"]["content"] = c.content
        if c.finish_reason is not None:
            reply["choices"][0]["finish_reason"] = c.finish_reason
        return reply

    def _pick_fault(self, key: str) -> str | None:
        c = self.config
        if not c.fault_rate or self.faults_given.get(key, 0) >= c.max_faults_per_request:
            return None
        if self.rng.random() >= c.fault_rate:
            return None
        self.faults_given[key] = self.faults_given.get(key, 0) + 1
        self.faults_picked += 1
        return c.fault_kinds[self.faults_picked % len(c.fault_kinds)]   # in turn: every kind shows up

    async def _answer(self, request, reply, fault, log) -> web.StreamResponse:
        self.waiting += 1
        try:
            while self.allowance == 0:
                await asyncio.sleep(0.005)
        finally:
            self.waiting -= 1
        if self.allowance is not None:
            self.allowance -= 1
        if fault == "timeout":
            self.record(**log, outcome="fault:timeout", status=None)
            await asyncio.sleep(self.config.hang_s)
            if request.transport:
                request.transport.abort()
            raise _NoAnswer("timeout fault: no answer")
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        data = json.dumps(reply).encode()
        usage = reply["usage"]
        log.update(prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"])
        transport = request.transport
        if transport is None or transport.is_closing():
            self.record(**log, outcome="client_gone", status=None)
            raise _NoAnswer("client went away")
        if fault == "drop":
            self.record(**log, outcome="fault:drop", status=None)
            transport.abort()
            raise _NoAnswer("drop fault")
        content_type = "application/json"
        if fault == "malformed_json":
            data = data[: len(data) // 2] + b"<html>Bad gateway"
        elif fault == "html":       # a proxy's or a login page, answered 200
            data, content_type = b"<!DOCTYPE html><html><body>Service unavailable</body></html>", "text/html"
        elif fault == "no_choices":
            data = json.dumps({"object": "chat.completion", "model": reply["model"], "detail": "queued"}).encode()
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        resp.content_length = len(data)
        try:
            await resp.prepare(request)
            if fault == "truncated":
                await resp.write(data[: len(data) // 2])
                self.record(**log, outcome="fault:truncated", status=200)
                transport.abort()
                raise _NoAnswer("truncated fault")
            await resp.write(data)
            await resp.write_eof()
        except _NoAnswer:
            raise
        except ConnectionError as e:
            self.record(**log, outcome="client_gone", status=None)
            raise _NoAnswer("client went away") from e
        self.record(**log, outcome=f"fault:{fault}" if fault else "ok", status=200)
        return resp

    # ------------------------------------------------------------------ Batch API
    async def upload_file(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(*error_body(401, "invalid API key", "authentication_error"))
        form = await request.post()
        upload = form.get("file")
        content = upload.file.read() if hasattr(upload, "file") else str(upload or "").encode()
        file_id = f"file-{uuid.uuid4().hex[:16]}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": getattr(upload, "filename", "upload.jsonl"),
                               "purpose": form.get("purpose", "batch"), "status": "processed", "content": content}
        self.record(path="/v1/files", outcome="uploaded", status=200, file_id=file_id)
        return _json(200, self._file_object(file_id))

    def _file_object(self, file_id: str) -> dict:
        return {k: v for k, v in self.files[file_id].items() if k != "content"}

    async def file_content(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return _json(*error_body(404, f"no file {file_id}", "not_found_error"))
        return web.Response(body=self.files[file_id]["content"], content_type="application/octet-stream")

    async def create_batch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(*error_body(401, "invalid API key", "authentication_error"))
        spec = await request.json()
        file_id = spec.get("input_file_id")
        if file_id not in self.files:
            return _json(*error_body(400, f"input_file_id {file_id!r} is not an uploaded file"))
        if spec.get("endpoint") != "/v1/chat/completions":
            return _json(*error_body(400, "only endpoint /v1/chat/completions is supported"))
        batch_id = f"batch_{uuid.uuid4().hex[:16]}"
        lines = self.files[file_id]["content"].decode().splitlines()
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": spec["endpoint"], "errors": None,
            "input_file_id": file_id, "completion_window": spec.get("completion_window", "24h"),
            "status": "in_progress", "output_file_id": None, "error_file_id": None,
            "created_at": int(time.time()), "in_progress_at": int(time.time()), "completed_at": None,
            "request_counts": {"total": len([x for x in lines if x.strip()]), "completed": 0, "failed": 0},
            "metadata": spec.get("metadata"), "_ready_at": time.monotonic() + self.config.batch_delay_s,
        }
        self.record(path="/v1/batches", outcome="batch_created", status=200, batch_id=batch_id)
        return _json(200, self._batch_object(batch_id))

    def _batch_object(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        if batch["status"] == "in_progress" and time.monotonic() >= batch["_ready_at"]:
            self._run_batch(batch)
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _run_batch(self, batch: dict) -> None:
        out, errors = [], []
        for line in self.files[batch["input_file_id"]]["content"].decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            body = json.dumps(item["body"]).encode()
            try:
                reply = self._reply(item["body"])
            except (BadRequest, _UnknownModel) as e:
                errors.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": item["custom_id"],
                               "response": {"status_code": 400, "body": error_body(400, str(e))[1]}, "error": None})
                continue
            usage = reply["usage"]
            self.record(path="batch", key=body_key(body), outcome="batch_ok", status=200, batch_id=batch["id"],
                        prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
                        fields=sorted(item["body"]))
            out.append({"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": item["custom_id"],
                        "response": {"status_code": 200, "request_id": reply["id"], "body": reply}, "error": None})
        for kind, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{uuid.uuid4().hex[:16]}"
                content = "".join(json.dumps(r) + "\n" for r in rows).encode()
                self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content),
                                       "created_at": int(time.time()), "filename": f"{batch['id']}_{kind}.jsonl",
                                       "purpose": "batch_output", "status": "processed", "content": content}
                batch[kind] = file_id
        batch.update(status="completed", completed_at=int(time.time()),
                     request_counts={"total": len(out) + len(errors), "completed": len(out), "failed": len(errors)})

    async def get_batch(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["batch_id"]
        if batch_id not in self.batches:
            return _json(*error_body(404, f"no batch {batch_id}", "not_found_error"))
        return _json(200, self._batch_object(batch_id))

    # ------------------------------------------------------------------ control
    async def get_log(self, request: web.Request) -> web.Response:
        return _json(200, {"log": self.log})

    async def set_hold(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.allowance = body["allow"] if "allow" in body else (0 if body.get("hold") else None)
        return _json(200, {"allowance": self.allowance})

    async def set_config(self, request: web.Request) -> web.Response:
        patch = await request.json()
        self.config = dataclasses.replace(self.config, **patch)
        self._reset_limits()
        return _json(200, dataclasses.asdict(self.config))

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, {"error": {"message": "invalid API key", "type": "authentication_error"}})
        # The models it serves (any name, when not configured: then the oracle's own name).
        served = self.config.models if self.config.models is not None else ("oracle",)
        context = {} if self.config.max_model_len is None else {"max_model_len": self.config.max_model_len}
        return _json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                       "owned_by": "lionflow", **context} for m in served]})


SERVER = web.AppKey("server", _Server)


def create_app(config: ServerConfig, log_path: str | None = None) -> web.Application:
    server = _Server(config, log_path)
    app = web.Application(client_max_size=256 * 1024 ** 2)
    app[SERVER] = server
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_get("/v1/models", server.models)
    app.router.add_post("/v1/files", server.upload_file)
    app.router.add_get("/v1/files/{file_id}/content", server.file_content)
    app.router.add_post("/v1/batches", server.create_batch)
    app.router.add_get("/v1/batches/{batch_id}", server.get_batch)
    app.router.add_get("/_testserver/log", server.get_log)
    app.router.add_post("/_testserver/hold", server.set_hold)
    app.router.add_post("/_testserver/config", server.set_config)
    return app


class TestServer:
    """The test server on a background thread: `with TestServer(ServerConfig(...)) as s: s.url`."""

    __test__ = False  # not a pytest class

    def __init__(self, config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config, self.host, self.port = config or ServerConfig(), host, port
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def server(self) -> _Server:
        return self.app[SERVER]

    def __enter__(self) -> TestServer:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start within 10 s")
        return self

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        self.app = create_app(self.config)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.1)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.host, self.port)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self._ready.set()
        self.loop.run_forever()

    def __exit__(self, *exc):
        async def stop():
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()  # handlers still holding a 'timeout' fault or a hold
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def call(self, fn, *args):
        """Run `fn(server, *args)` on the server's loop (thread-safe) and return its result."""
        async def run():
            return fn(self.server, *args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def log(self) -> list[dict]:
        return self.call(lambda s: list(s.log))

    def set_hold(self, hold: bool) -> None:
        """Hold every chat request from now on (True), or answer them all again (False)."""
        self.allow(0 if hold else None)

    def allow(self, n: int | None) -> None:
        """Answer `n` more chat requests, then hold the rest unanswered (None: answer all)."""
        self.call(lambda s: setattr(s, "allowance", n))

    def waiting(self) -> int:
        """How many chat requests the server holds unanswered right now."""
        return self.call(lambda s: s.waiting)

    def reconfigure(self, **patch) -> None:
        def apply(s):
            s.config = dataclasses.replace(s.config, **patch)
            s._reset_limits()
        self.call(apply)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python tests/testserver.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed, and see --port-file)")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--log-file", help="append one JSON line per request here")
    for f in dataclasses.fields(ServerConfig):
        if f.name == "fault_kinds":
            ap.add_argument("--fault-kinds", default=",".join(FAULT_KINDS), help="comma-separated subset of faults")
        elif f.name == "models":
            ap.add_argument("--models", help="comma-separated models served (default: any)")
        elif f.name in ("system_fingerprint", "served_model", "content", "finish_reason"):
            ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None)
        elif f.name != "api_key":  # a key is read from the environment, never from the command line
            kind = int if f.name in ("capacity", "max_faults_per_request", "seed", "max_model_len") else float
            ap.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=f.default)
    ap.add_argument("--api-key-env", help="require the key held by this environment variable")
    args = ap.parse_args(argv)
    import os
    config = ServerConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerConfig)
                             if f.name not in ("fault_kinds", "api_key", "models")},
                          fault_kinds=tuple(k for k in args.fault_kinds.split(",") if k),
                          models=tuple(args.models.split(",")) if args.models else None,
                          api_key=os.environ[args.api_key_env] if args.api_key_env else None)

    async def serve():
        runner = web.AppRunner(create_app(config, args.log_file), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        port = runner.addresses[0][1]
        if args.port_file:
            with open(args.port_file + ".tmp", "w") as f:
                f.write(str(port))
            os.replace(args.port_file + ".tmp", args.port_file)
        print(f"test server at http://{args.host}:{port}/v1", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
