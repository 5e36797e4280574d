"""A minimal OpenAI-compatible chat API over the oracle, as a raw ASGI app (no framework)."""
from __future__ import annotations

import itertools
import json
import time

from .roles import message_text, respond

MODEL = "oracle"
# The names it answers to in its model list: its own and the one config/config.yaml asks for (it answers any).
MODELS = (MODEL, "oracle-1")
_ids = itertools.count(1)


class BadRequest(Exception):
    pass


def error_body(status: int, message: str, type_: str = "invalid_request_error") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": type_, "param": None, "code": None}}


def completion(req: dict) -> dict:
    if not isinstance(req, dict):
        raise BadRequest("request body must be a JSON object")
    model, messages = req.get("model"), req.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    if req.get("n", 1) not in (1, None):
        raise BadRequest("only n=1 is supported")
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadRequest("'max_tokens' must be a positive integer")
    # temperature / top_p are accepted but ignored: the oracle is deterministic.
    content, finish = respond(messages, {"max_tokens": max_tokens, "seed": req.get("seed")})
    prompt_tokens = sum(len(message_text(m.get("content")).split()) for m in messages)
    completion_tokens = len(content.split())
    return {
        "id": f"chatcmpl-oracle-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _route(method: str, path: str, body: bytes) -> tuple[int, dict]:
    path = path.rstrip("/")
    if path == "/v1/models" and method == "GET":
        return 200, {"object": "list",
                     "data": [{"id": m, "object": "model", "created": 0, "owned_by": "lionflow"} for m in MODELS]}
    if path == "/v1/chat/completions" and method == "POST":
        try:
            return 200, completion(json.loads(body or b"null"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_body(400, "malformed JSON body")
        except BadRequest as e:
            return error_body(400, str(e))
    return error_body(404, f"no route for {method} {path}", "not_found_error")


def create_app():
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":      # uvicorn asks; nothing to set up
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        status, payload = _route(scope["method"], scope["path"], body)
        data = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    return app


def transport():
    """An in-process transport to a fresh oracle app, for an OpenAI client (no network, no key)."""
    import httpx2

    return httpx2.ASGITransport(app=create_app())
