"""Generation: new hard instructions modelled on hard ones, new easy ones on easy ones, filtered.

Each request shows the generator one example drawn at random (seeded polars sampling, with
replacement) and carries its own
`seed`, so two requests built on the same example are distinct requests (and distinct cache
entries). Replies go through the paper's filters - cut off by the length limit, 3 words or
fewer, not text (control or replacement characters), starting with punctuation, leaking the
template's own words, overlapping an evaluation set the run uses (decontamination.py), ROUGE-L
F > threshold against the cache pool or an instruction kept before - and rejected ones are kept
with their reason. Rounds repeat until the requested count is kept or `max_rounds` is reached.
Kept ones record their lineage: parent id, where it was drawn from, ROUGE-L F with it.
"""

from __future__ import annotations

import collections
import logging
import unicodedata
import zlib
from dataclasses import dataclass

import polars as pl

from .decontamination import Decontaminator
from .dedup import filter_near_duplicates, rouge_l_f, rouge_tokenize
from .failures import check_failure_rate, check_rows
from .layout import STRATEGIES
from .llm import LLM, LLMFailure
from .prompts import PromptTemplate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    min_words: int  # generation.min_words (the paper rejects instructions of 3 words or fewer)
    rouge_threshold: float  # generation.rouge_threshold
    leak_words: tuple[str, ...] = ()
    decontaminator: Decontaminator | None = None  # None: no evaluation sets to check against


def is_text(text: str) -> bool:
    """No control characters (tab and newline allowed), no U+FFFD replacement characters (a decoding
    failure; a real small model produced one), no unpaired surrogates or private-use characters."""
    return not any(ch == "\ufffd" or (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\t\n\r")
                   for ch in text)


def reject_reason(text: str, finish_reason: str, filters: Filters) -> str | None:
    """The first cheap filter that rejects a generated instruction, or None."""
    if finish_reason == "length":
        return "truncated"
    if not is_text(text):
        return "not_text"
    if len(text.split()) < filters.min_words:
        return "too_short"
    if not text[0].isalnum() and text[0] not in "\"'(":
        return "starts_with_punctuation"
    lowered = text.lower()
    if any(word.lower() in lowered for word in filters.leak_words):
        return "leaked_template"
    return None


def parent_examples(strategy: str, origin: str, *, hard: pl.DataFrame, easy: pl.DataFrame,
                    cache_pool: pl.DataFrame) -> pl.DataFrame:
    """The examples new `origin` instructions are modelled on.

    adversarial (the paper): the referee's hard instructions for new hard ones, easy for easy.
    uniform (the ablation): the whole cache pool for both, so that only the referee's signal is
    missing - same templates, same counts, hence the same number of teacher, referee and
    generator requests.
    """
    if strategy == "adversarial":
        return hard if origin == "hard" else easy
    if strategy == "uniform":
        return cache_pool
    raise ValueError(f"generation.strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")


def parent_pool(strategy: str, origin: str) -> str:
    """Where `parent_examples` draws from, as new instructions record it (`parent_pool`)."""
    return {"adversarial": origin, "uniform": "cache"}[strategy]


def generate_instructions(generator: LLM, template: PromptTemplate, examples: pl.DataFrame, *, origin: str,
                          count: int, iteration: int, pool: list[str], filters: Filters, seed: int,
                          max_rounds: int, drawn_from: str | None = None,
                          max_failure_rate: float = 0.0) -> tuple[list[dict], list[dict]]:
    """Returns (kept instructions, schema `instruction`; rejected, schema `rejected_instruction`).

    `examples`: a frame with id, instruction, input (hard/easy split or cache pool); `drawn_from`:
    which (`parent_pool`: hard, easy or cache; default `origin`, the adversarial strategy's).
    `pool` holds the texts to deduplicate against (the cache pool, plus instructions kept by
    an earlier call in the same iteration); kept ones are appended to it. `max_failure_rate`
    (llm.failure_tolerance): the share of a round's requests that may fail for good.
    """
    kept: list[dict] = []
    rejected: list[dict] = []
    if examples.is_empty() or count == 0:
        log.warning("no %s examples: no new %s instructions this iteration", origin, origin)
        return kept, rejected
    request_index, n_failed = 0, 0
    for round_ in range(max_rounds):
        missing = count - len(kept)
        if missing <= 0:
            break
        draw_seed = zlib.crc32(f"{seed}-{iteration}-{origin}-{round_}".encode())
        parents = examples.select("id", "instruction", "input") \
            .sample(missing, with_replacement=True, seed=draw_seed).to_dicts()
        requests = []
        for parent in parents:
            messages = template.messages(instruction=parent["instruction"], input=parent["input"])
            requests.append((messages, {"seed": seed * 1_000_003 + request_index}))
            request_index += 1
        replies = generator.complete(requests, desc=f"generate {origin} (round {round_ + 1})",
                                     ids=[f"new {origin} instruction from {p['id']}" for p in parents])
        failed = [{"id": f"from {p['id']}", "kind": r.kind or "error", "error": r.error}
                  for p, r in zip(parents, replies) if isinstance(r, LLMFailure)]
        # A failed request is one candidate fewer (the next round draws again), within the one rate.
        n_failed += len(failed)
        if failed:
            check_failure_rate("generator", "request", failed, len(replies), max_failure_rate,
                               "llm.failure_tolerance")

        candidates = []  # (parent, text) that passed the cheap filters
        for parent, reply in zip(parents, replies):
            if isinstance(reply, LLMFailure):
                continue
            text = reply.content.strip()
            reason = reject_reason(text, reply.finish_reason, filters) if text else "too_short"
            if reason:
                rejected.append({"instruction": text, "origin": origin, "parent_id": parent["id"], "reason": reason,
                                 "max_similarity": None, "most_similar": None, "shared_ngram": None})
            else:
                candidates.append((parent, text))
        if filters.decontaminator is not None:  # before dedup: a copied eval question is named as such
            matches = filters.decontaminator.check([t for _, t in candidates])
            for (parent, text), m in zip(candidates, matches):
                if m is not None:
                    rejected.append({"instruction": text, "origin": origin, "parent_id": parent["id"],
                                     "reason": "contaminated", "max_similarity": m.max_similarity,
                                     "most_similar": m.most_similar, "shared_ngram": m.shared_ngram})
            candidates = [c for c, m in zip(candidates, matches) if m is None]
        decisions = filter_near_duplicates([t for _, t in candidates], pool, filters.rouge_threshold)
        for (parent, text), d in zip(candidates, decisions):
            if d.kept:
                pool.append(text)
                parent_text = f"{parent['instruction']} {parent['input']}"
                kept.append({"id": f"it{iteration}-{origin}-{len(kept) + 1:05d}", "instruction": text, "input": "",
                             "origin": origin, "iteration": iteration, "parent_id": parent["id"],
                             "max_similarity": round(d.max_similarity, 6), "parent_pool": drawn_from or origin,
                             "parent_similarity": round(rouge_l_f(rouge_tokenize(text), rouge_tokenize(parent_text)), 6)})
            else:
                rejected.append({"instruction": text, "origin": origin, "parent_id": parent["id"],
                                 "reason": "near_duplicate", "max_similarity": d.max_similarity,
                                 "most_similar": d.most_similar, "shared_ngram": None})
        log.info("%s round %d: %d kept so far, %d rejected so far", origin, round_ + 1, len(kept), len(rejected))
    # every request: kept, rejected (with its reason) or failed
    check_rows(f"generator (new {origin})", request_index, len(kept) + len(rejected), n_failed)
    if len(kept) < count:
        log.warning("kept %d of %d new %s instructions after %d rounds", len(kept), count, origin, max_rounds)
    return kept, rejected


def check_next_train_pool(kept: dict[str, int], asked: dict[str, int], rejected: list[dict], mode: str,
                          iteration: int) -> None:
    """With pools.next_train_pool new, the next iteration trains on the instructions kept here: none kept is
    an error now, naming what the filters rejected, before anything of the next iteration is paid for.
    kept, asked: per origin (hard, easy), the instructions kept and asked for (generation.new_<origin>)."""
    if mode != "new" or sum(kept.values()):
        return
    reasons = collections.Counter(r["reason"] for r in rejected)
    shown = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()) or "none"
    raise ValueError(
        f"generation (iteration {iteration}): no new instruction kept ("
        + ", ".join(f"new_{o}: {kept[o]} of {asked[o]} asked (generation.new_{o})" for o in asked)
        + f"; rejected by the filters: {shown}) and pools.next_train_pool=new: iteration {iteration + 1} would "
        "have nothing to train on; nothing of it was paid for. Ask for more (generation.new_hard, new_easy, "
        "max_rounds), relax the filters (generation.rouge_threshold, min_words), or set pools.next_train_pool: all")
