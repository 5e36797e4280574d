"""Decontamination: generated instructions that overlap an evaluation set the run uses are rejected.

Two checks, on the dedup filter's tokens (``rouge_tokenize``: lowercase [a-z0-9] runs):

- ROUGE-L: the exact machinery of the near-duplicate filter (``filter_near_duplicates`` against
  the evaluation texts), F > ``rouge_threshold`` - catches a copied or lightly reworded question;
- n-gram overlap: the candidate shares a contiguous ``ngram``-token run with an evaluation text
  (13 as in GPT-3's decontamination, Brown et al. 2020). An evaluation text shorter than that (most
  questions of the oracle suite are 4-12 tokens) would never match, so it is one n-gram of its own
  length: the candidate contains the whole question. This catches a question embedded in a longer
  instruction ("Answer and explain: What is 30 + 65?"), which ROUGE-L's F misses since the length
  difference lowers its precision. Texts shorter than ``min_ngram`` tokens ("Hello") are only
  checked by ROUGE-L: their containment says nothing.

The evaluation texts are exactly what the evaluated model sees: every document of every lm-eval
task the run evaluates (its `doc_to_text`, through lm-eval's own task loading from
eval.lm_eval.include_path), and the judge's questions (instruction and input) when the judge is on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .artifacts import read_jsonl
from .dedup import filter_near_duplicates, rouge_tokenize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Match:
    """Why a candidate is contaminated: its ROUGE-L F with the nearest evaluation text and, when the
    n-gram check fired, the shared n-gram (tokens joined by spaces) and the text it came from."""
    max_similarity: float
    most_similar: str
    shared_ngram: str | None


class Decontaminator:
    def __init__(self, eval_texts: list[str], *, rouge_threshold: float, ngram: int, min_ngram: int):
        if not 1 <= min_ngram <= ngram:
            raise ValueError(f"generation.decontamination: min_ngram={min_ngram} must be between 1 and ngram={ngram}")
        self.texts = list(dict.fromkeys(t for t in eval_texts if rouge_tokenize(t)))
        self.rouge_threshold = rouge_threshold
        self.grams: dict[tuple[str, ...], int] = {}  # n-gram -> index of the first text holding it
        for i, text in enumerate(self.texts):
            tokens = rouge_tokenize(text)
            n = min(ngram, len(tokens))
            if n >= min_ngram:
                for j in range(len(tokens) - n + 1):
                    self.grams.setdefault(tuple(tokens[j:j + n]), i)
        self.sizes = sorted({len(g) for g in self.grams})

    def _shared(self, tokens: list[str]) -> tuple[str, ...] | None:
        for n in self.sizes:
            for j in range(len(tokens) - n + 1):
                if (gram := tuple(tokens[j:j + n])) in self.grams:
                    return gram
        return None

    def check(self, candidates: list[str]) -> list[Match | None]:
        """One verdict per candidate: a Match when it is contaminated, else None."""
        if not self.texts:
            return [None] * len(candidates)
        nearest = filter_near_duplicates(candidates, self.texts, self.rouge_threshold, within_batch=False)
        out: list[Match | None] = []
        for text, d in zip(candidates, nearest):
            gram = self._shared(rouge_tokenize(text))
            if gram is None and d.kept:
                out.append(None)
            else:
                source = self.texts[self.grams[gram]] if gram is not None and d.kept else d.most_similar
                out.append(Match(round(d.max_similarity, 6), source, None if gram is None else " ".join(gram)))
        return out


def judge_texts(questions_path) -> list[str]:
    """The judge's questions as the answering models see them: the instruction, and the input below it."""
    return [q["instruction"] + (f"\n{q['input']}" if q.get("input") else "")
            for q in read_jsonl(questions_path, "eval_question")]


def lm_eval_texts(tasks: list[str], include_path) -> list[str]:
    """Every document's prompt (`doc_to_text`) of the lm-eval tasks and groups, all splits the tasks
    evaluate on (test, else validation), loaded by lm-eval itself as the evaluation loads them."""
    from lm_eval.tasks import TaskManager

    texts = []
    for task in TaskManager(include_path=str(include_path)).load(list(tasks))["tasks"].values():
        docs = task.test_docs() if task.has_test_docs() else task.validation_docs()
        texts += [t for t in map(task.doc_to_text, docs) if isinstance(t, str)]
    return texts


def eval_texts(sets: dict) -> list[str]:
    """The texts of the evaluation sets `sets` names: {lm_eval_tasks, include_path, judge_questions}
    (rules/common.smk, decontamination_sets; None leaves a kind out)."""
    texts = lm_eval_texts(sets["lm_eval_tasks"], sets["include_path"]) if sets["lm_eval_tasks"] else []
    if sets["judge_questions"]:
        texts += judge_texts(sets["judge_questions"])
    log.info("decontamination against %d evaluation texts", len(texts))
    return texts


def decontaminator(sets: dict, cfg: dict) -> Decontaminator | None:
    """The check config generation.decontamination (`cfg`) describes; None when disabled."""
    if not cfg["enabled"]:
        return None
    return Decontaminator(eval_texts(sets), rouge_threshold=cfg["rouge_threshold"], ngram=cfg["ngram"],
                          min_ngram=cfg["min_ngram"])
