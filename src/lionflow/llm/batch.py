"""Batch mode (`mode: batch`): the OpenAI Batch API, resumable after a crash.

The requests not in the cache are written as one JSONL batch file (custom_id = request key),
uploaded and submitted; the batch id is persisted the moment the batch exists, in
`<cache_dir>/batches/<id of the pending set>.json`. A rerun with the same pending requests
finds that file and polls the same batch instead of submitting (and paying for) a new one.
Results land in the same response cache as online answers, booked at `batch_discount`.
The window where a crash costs a resubmission is between the create call returning and the
id reaching the disk (one write). The batch holds claims on its requests (lionflow.llm.pipeline,
lionflow.llm.claims) until it is done, so other jobs wait for its answers instead of paying for them; requests
another live job holds are left out of the batch and their answers waited for. Claims of a
dead holder are taken over first (within llm.lease_s), so that a rerun after a crash asks for
the same set and finds its batch again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import openai

from ..artifacts import atomic_write
from .bookkeeping import Books, Completion, LLMFailure
from .claims import POLL_S
from .pipeline import Dispatch, Request

log = logging.getLogger(__name__)
DONE = ("completed", "failed", "expired", "cancelled")


class BatchSender:
    """Sends a role's requests through the OpenAI Batch API (the other way to send, beside online)."""

    def __init__(self, books: Books):
        self.books = books

    def complete(self, requests, desc: str, ids=None, check=None) -> list[Completion | LLMFailure]:
        return _complete_in_batch(self.books, requests, desc, ids)


def _complete_in_batch(books: Books, requests, desc: str, ids=None) -> list[Completion | LLMFailure]:
    role, ep = books.role, books.role.endpoint
    if ep.builtin:
        raise ValueError(f"llm.{role.name}.mode: batch needs an endpoint with the Batch API; "
                         f"{ep.name} is served in-process (use online mode, or a server with the Batch API)")
    started = time.monotonic()
    call = Dispatch(books, requests, ids)
    keys = list(call.misses())
    if not keys:
        return call.results
    try:
        for key in keys:
            call.claim(key)
        # A key whose holder looks alive is watched for up to lease_s (a dead holder's heartbeat stops) first.
        call.take_over_dead(within_s=role.lease_s + 1.0, every_s=min(1.0, role.lease_s / 4))
        pending = {key: _body(role.model, call.bodies[key]) for key in keys if key in call.mine}
        if pending:
            try:
                _run_batch(books, call, pending, desc)
            except (openai.OpenAIError, RuntimeError) as e:
                raise RuntimeError(f"{role.where()}: batch mode: {e}") from e
        for key in call.wait_held(every_s=max(POLL_S, 1.0)):
            rid = call.bodies[key].rid
            call.resolve(key, LLMFailure(f"{role.where()}: request {key[:12]}" + (f" for {rid}" if ids else "")
                                         + " was held by another job that stopped without an answer; a rerun "
                                         "sends it", "held elsewhere"))
        books.stats.failures += sum(isinstance(r, LLMFailure) for r in call.results)
        return call.results
    finally:
        call.release_all()
        books.close()
        books.stats.wall_s += time.monotonic() - started


def _body(model: str, request: Request) -> dict:
    """A request as the Batch API takes it; server-only parameters (extra_body) travel in the body itself."""
    extra_body = request.params.get("extra_body") or {}
    return {"model": model, "messages": request.messages,
            **{k: v for k, v in request.params.items() if k != "extra_body"}, **extra_body}


def _run_batch(books: Books, call: Dispatch, pending: dict[str, dict], desc: str) -> None:
    role, ep = books.role, books.role.endpoint
    state_dir = books.cache.dir / "batches"
    state_dir.mkdir(exist_ok=True)
    job = hashlib.sha256("\n".join(sorted(pending)).encode()).hexdigest()[:20]
    state_path = state_dir / f"{role.name}-{job}.json"
    client = openai.OpenAI(api_key=ep.api_key(), base_url=ep.base_url, timeout=ep.timeout_s,
                           max_retries=ep.max_retries)
    try:
        if state_path.exists():
            batch_id = json.loads(state_path.read_text())["batch_id"]
            log.info("%s: resuming batch %s (%d requests) from %s", desc, batch_id, len(pending), state_path)
        else:
            lines = "".join(json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                                        "body": body}) + "\n" for key, body in pending.items())
            upload = client.files.create(file=(f"{role.name}-{job}.jsonl", lines.encode()), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                          completion_window="24h", metadata={"lionflow_job": job})
            batch_id = batch.id
            atomic_write(state_path, json.dumps({"batch_id": batch_id, "input_file_id": upload.id,
                                                 "requests": len(pending)}))
            log.info("%s: submitted batch %s (%d requests), id kept in %s", desc, batch_id, len(pending), state_path)
        while (batch := client.batches.retrieve(batch_id)).status not in DONE:
            counts = batch.request_counts
            log.info("%s: batch %s %s (%s of %d done)", desc, batch_id, batch.status,
                     counts.completed if counts else "?", len(pending))
            time.sleep(role.batch_poll_s)
        answered = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in client.files.content(file_id).text.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, response = item["custom_id"], item.get("response") or {}
                body = response.get("body") or {}
                if key not in pending:
                    continue
                answered.add(key)
                if response.get("status_code") == 200 and body.get("choices"):
                    choice = body["choices"][0]
                    usage = {k: body.get("usage", {}).get(k, 0) for k in ("prompt_tokens", "completion_tokens")}
                    served, fingerprint = body.get("model") or role.model, body.get("system_fingerprint")
                    books.book(usage, discount=role.batch_discount, served_model=served,
                              system_fingerprint=fingerprint)
                    content = choice["message"].get("content")
                    result = (books.store(key, content, choice["finish_reason"], usage, served, fingerprint)
                              if content is not None else
                              LLMFailure(f"{role.where()}: empty message in batch {batch_id} for request {key[:12]}",
                                         "empty message"))
                else:
                    error = item.get("error") or body.get("error") or {}
                    result = LLMFailure(f"{role.where()}: batch {batch_id} request {key[:12]}: HTTP "
                                        f"{response.get('status_code')} "
                                        f"{error.get('message', error)}", f"batch HTTP {response.get('status_code')}")
                call.resolve(key, result)
        for key in set(pending) - answered:
            call.resolve(key, LLMFailure(f"{role.where()}: batch {batch_id} ended {batch.status} without request "
                                         f"{key[:12]}", f"batch {batch.status}"))
        state_path.unlink(missing_ok=True)   # done: a later run with these requests hits the cache
    finally:
        client.close()
