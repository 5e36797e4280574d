"""Discrimination: the referee scores teacher vs student answers in both orders; hard/easy split.

Each (teacher, student) pair is judged twice, once with each answer in the first position, and
each model's score is the mean of its two scores, which cancels the referee's position bias.
A reply whose score lines cannot be parsed is asked again (with a new `seed`, so that a cached
bad reply is not simply returned); after `parse_retries` it is recorded as a failure and the
pair is excluded from the split - never averaged in as a number.
"""

from __future__ import annotations

import logging
import re
import statistics

import polars as pl

from .failures import check_rows
from .frames import polars_schema, scan_frame, write_frames
from .llm import LLM, LLMFailure
from .prompts import PromptTemplate

log = logging.getLogger(__name__)

# "Assistant 1: 7", also "**Assistant 1:** 7.5", "Assistant 2 score: 8/10".
_SCORE_LINE = re.compile(
    r"^[\s*#>-]*assistant\s*([12])\b[^\n\d]{0,20}?[:=]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\**\s*\.?\s*$",
    re.IGNORECASE | re.MULTILINE,
)
ORDERS = ("teacher", "student")  # which answer is shown first
# A failed verdict's kind, from its error: a reply without usable scores, or a request that failed after its retries.
FAILURE_KINDS = ("unparseable", "request")
UNPARSEABLE = "unparseable reply"  # the error's prefix for the first kind


def parse_scores(reply: str) -> tuple[float, float]:
    """The scores of assistant 1 and 2 from the last score line of each; ValueError if unusable."""
    found: dict[str, float] = {}
    for number, value in _SCORE_LINE.findall(reply or ""):
        found[number] = float(value)  # later lines win: the verdict comes after the explanation
    if set(found) != {"1", "2"}:
        raise ValueError("no 'Assistant 1: <score>' and 'Assistant 2: <score>' lines")
    for number, value in found.items():
        if not 1 <= value <= 10:
            raise ValueError(f"score of assistant {number} is {value}, outside 1-10")
    return found["1"], found["2"]


def score_check(reply) -> str | None:
    """For the circuit breaker: 'unparseable reply' when a paid reply holds no usable score lines."""
    try:
        parse_scores(reply.content)
    except ValueError:
        return UNPARSEABLE
    return None


def pair_answers(teacher: list[dict], student: list[dict]) -> list[dict]:
    """The teacher's and the student's answers to each instruction side by side, in the teacher's order
    (rows: id, instruction, input, answer, answer_student). Both must cover the same ids, once each."""
    answers = lambda records, cols: pl.DataFrame([{c: r[c] for c in cols} for r in records],
                                                 schema={c: pl.String for c in cols})
    t = answers(teacher, ("id", "instruction", "input", "answer"))
    s = answers(student, ("id", "answer"))
    uncovered = pl.concat([t.join(s, on="id", how="anti")["id"], s.join(t, on="id", how="anti")["id"]])
    repeated = pl.concat([t["id"].filter(t["id"].is_duplicated()), s["id"].filter(s["id"].is_duplicated())])
    if len(uncovered) or len(repeated):
        raise ValueError(f"teacher and student answers cover different instructions (e.g. "
                         f"{(uncovered.to_list() + repeated.to_list())[:3]})")
    return t.join(s, on="id", how="left", suffix="_student", maintain_order="left").to_dicts()


def score_pairs(referee: LLM, template: PromptTemplate, teacher: list[dict], student: list[dict],
                parse_retries: int) -> list[dict]:
    """Referee-score records (schema `referee_score`), one per instruction, in the teacher's order."""
    pairs = pair_answers(teacher, student)
    verdicts: dict[tuple[str, str], dict] = {}
    pending = [(p, first) for p in pairs for first in ORDERS]
    for attempt in range(1 + parse_retries):
        if not pending:
            break
        requests = []
        for p, first in pending:
            a1, a2 = (p["answer"], p["answer_student"]) if first == "teacher" else (p["answer_student"], p["answer"])
            messages = template.messages(instruction=p["instruction"], input=p["input"], answer_1=a1, answer_2=a2)
            requests.append((messages, {"seed": attempt} if attempt else {}))
        replies = referee.complete(requests, desc=f"referee (attempt {attempt + 1})",
                                   ids=[f"{p['id']} ({first} first)" for p, first in pending], check=score_check)
        still_pending = []
        for (p, first), reply in zip(pending, replies):
            verdict = {"first": first, "raw": None, "attempts": attempt + 1,
                       "teacher_score": None, "student_score": None, "error": None}
            if isinstance(reply, LLMFailure):
                verdict["error"] = reply.error  # the client already retried transient errors
            else:
                verdict["raw"] = reply.content
                try:
                    s1, s2 = parse_scores(reply.content)
                    verdict["teacher_score"], verdict["student_score"] = (s1, s2) if first == "teacher" else (s2, s1)
                except ValueError as e:
                    verdict["error"] = f"{UNPARSEABLE}: {e}"
                    still_pending.append((p, first))
            verdicts[p["id"], first] = verdict
        pending = still_pending

    records = []
    for p in pairs:
        orders = [verdicts[p["id"], first] for first in ORDERS]
        failed = any(o["teacher_score"] is None for o in orders)
        ts = None if failed else statistics.fmean(o["teacher_score"] for o in orders)
        ss = None if failed else statistics.fmean(o["student_score"] for o in orders)
        records.append({"id": p["id"], "instruction": p["instruction"], "input": p["input"], "orders": orders,
                        "teacher_score": ts, "student_score": ss, "gap": None if failed else ts - ss,
                        "failed": failed})
    # one record per answer pair, failed verdicts included (marked `failed`)
    check_rows(referee.role.name, len(teacher), len(records), 0)
    return records


def failed_verdicts(records: list[dict]) -> list[dict]:
    """{id, kind, error} of each record (pair or question) whose verdict failed in either order."""
    failed = []
    for r in records:
        if r["failed"]:
            error = next(o["error"] for o in r["orders"] if o["error"])
            failed.append({"id": r["id"], "kind": verdict_failure_kind(error), "error": error})
    return failed


def verdict_failure_kind(error: str) -> str:
    """A failed verdict's kind (FAILURE_KINDS) from its error: a reply without scores, or a failed request."""
    unparseable, request = FAILURE_KINDS
    return unparseable if error.startswith(UNPARSEABLE) else request


def split_hard_easy(scores: pl.LazyFrame | pl.DataFrame, threshold: float) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """hard: teacher - student >= threshold; easy: the rest (the student may win). Failures excluded.

    Lazy frames of schema `scored_instruction`, in pool order."""
    scored = scores.lazy().filter(~pl.col("failed")).select(polars_schema("scored_instruction").names())
    return scored.filter(pl.col("gap") >= threshold), scored.filter(pl.col("gap") < threshold)


def write_split_hard_easy(scores_path, threshold: float, hard_path, easy_path) -> tuple[int, int, int]:
    """`split_hard_easy` file to file, streaming the scores (the cache pool can be 70K+ pairs).

    Returns the counts (hard, easy, excluded as referee failures).
    """
    scores = scan_frame(scores_path, "referee_score")
    hard, easy = split_hard_easy(scores, threshold)
    n_in, n_failed = scores.select(pl.len(), pl.col("failed").sum()).collect(engine="streaming").row(0)
    n_hard, n_easy = write_frames([(hard, hard_path, "scored_instruction"), (easy, easy_path, "scored_instruction")],
                                  check_counts=lambda n: check_rows("split_hard_easy", n_in, sum(n), n_failed))
    return n_hard, n_easy, n_failed


def split_warning(n_hard: int, n_easy: int, band: list[float], threshold: float) -> str | None:
    """A warning when the hard share of the scored instructions lies outside `band` (discrimination.
    hard_fraction_band): the split then does not discriminate; the message says what to change."""
    scored = n_hard + n_easy
    if not scored or band[0] <= n_hard / scored <= band[1]:
        return None
    few = n_hard / scored < band[0]
    change = (f"lower discrimination.threshold (now {threshold:g}), or make the student weaker or the seed "
              "instructions harder" if few else
              f"raise discrimination.threshold (now {threshold:g}), or make the student stronger (base model, "
              "training) or the seed instructions easier")
    return (f"{n_hard} of {scored} scored instructions are hard ({n_hard / scored:.0%}), outside "
            f"discrimination.hard_fraction_band=[{band[0]:.0%}, {band[1]:.0%}]: the split does not discriminate, so "
            "new instructions modelled on the hard ones are close to ones modelled on random instructions "
            f"(adversarial selection degenerates to uniform); {change}")


def referee_reliability(scores: pl.LazyFrame | pl.DataFrame, threshold: float, min_order_agreement: float) -> dict:
    """How far one iteration's referee can be trusted, from its verdicts in both orders (one lazy query).

    Over the pairs scored in both orders: `order_agreement` - share whose winner (teacher, student or
    tie) is the same in both orders; `position_bias` - mean score of the answer shown first minus the
    one shown second, over both orders (> 0: the referee favours the first position); `tie_rate` -
    share of verdicts scoring both answers equal; `label_flips` - share whose hard/easy label (gap >=
    threshold) under the teacher-first or the student-first verdict alone differs from the label of
    the averaged gap the split uses, and under either. `failure_rate`: failed pairs of all pairs, and
    per kind the verdicts (two per pair) that failed so. `warning` when the agreement is below
    `min_order_agreement` (discrimination.min_order_agreement). Figures are None without scored pairs.
    """
    verdicts = scores.lazy().select("id", "orders").explode("orders").unnest("orders").with_columns(
        ok=pl.col("teacher_score").is_not_null() & pl.col("student_score").is_not_null(),
        gap=pl.col("teacher_score") - pl.col("student_score"))
    failures = verdicts.filter(~pl.col("ok")).group_by(kind=pl.col("error").map_elements(verdict_failure_kind, return_dtype=pl.String)).len()
    by_first = lambda first: pl.col("gap").filter(pl.col("first") == first).first()
    pairs = verdicts.group_by("id").agg(failed=(~pl.col("ok")).any(), tf=by_first("teacher"), sf=by_first("student"))
    label = lambda gap: gap >= threshold
    avg = (pl.col("tf") + pl.col("sf")) / 2
    row = pairs.select(
        pairs=pl.len(),
        failed=pl.col("failed").sum(),
        agreement=(pl.col("tf").sign() == pl.col("sf").sign()).filter(~pl.col("failed")).mean(),
        bias=((pl.col("tf") - pl.col("sf")) / 2).filter(~pl.col("failed")).mean(),
        ties=((pl.col("tf") == 0).cast(pl.Float64) + (pl.col("sf") == 0).cast(pl.Float64)).filter(~pl.col("failed")).mean() / 2,
        flip_tf=(label(pl.col("tf")) != label(avg)).filter(~pl.col("failed")).mean(),
        flip_sf=(label(pl.col("sf")) != label(avg)).filter(~pl.col("failed")).mean(),
        flip_any=((label(pl.col("tf")) != label(avg)) | (label(pl.col("sf")) != label(avg))).filter(~pl.col("failed")).mean(),
    ).collect(engine="streaming").row(0, named=True)
    kinds = dict(failures.collect(engine="streaming").iter_rows())
    n, failed = row["pairs"], int(row["failed"] or 0)
    r = lambda x: None if x is None else round(float(x), 4)
    agreement = r(row["agreement"])
    warning = None
    if agreement is not None and agreement < min_order_agreement:
        warning = (f"the referee's two orders agree on the winner for {agreement:.1%} of pairs, below "
                   f"discrimination.min_order_agreement={min_order_agreement:.0%}: its hard/easy split is unreliable")
    return {
        "pairs": n, "scored": n - failed, "order_agreement": agreement, "position_bias": r(row["bias"]),
        "tie_rate": r(row["ties"]),
        "label_flips": {"teacher_first": r(row["flip_tf"]), "student_first": r(row["flip_sf"]), "either": r(row["flip_any"])},
        "failure_rate": {"pairs": r(failed / n) if n else None,
                         **{k: r(kinds.get(k, 0) / (2 * n)) if n else None for k in FAILURE_KINDS}},
        "warning": warning,
    }
