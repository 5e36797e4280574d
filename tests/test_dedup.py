"""lionflow.dedup must agree exactly with rouge_score (RougeScorer(["rougeL"]), no stemmer)."""

import random

import pytest

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
from rouge_score import tokenize as rs_tokenize  # noqa: E402

from lionflow import dedup  # noqa: E402
from lionflow.dedup import filter_near_duplicates, lcs_length, rouge_l_f, rouge_tokenize  # noqa: E402

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def ref_f(candidate: str, reference: str) -> float:
    return SCORER.score(candidate, reference)["rougeL"].fmeasure


def ref_filter(candidates, pool, threshold=0.7):
    """Brute force: (kept, exact max F) per candidate, rouge_score on pre-tokenized text."""
    pool_toks = [rs_tokenize.tokenize(p, None) for p in pool]
    out = []
    for c in candidates:
        ct = rs_tokenize.tokenize(c, None)
        best = max((rouge_scorer._score_lcs(ct, p).fmeasure for p in pool_toks), default=0.0)
        kept = not best > threshold
        out.append((kept, best))
        if kept:
            pool_toks.append(ct)
    return out


WORDS = ("write a short poem about the sea explain how to make bread list three reasons why "
         "cats sleep describe your favorite city give me an example of good code summarize "
         "this article in one sentence translate into french what is difference between").split()


def make_texts(rng, n, lo=3, hi=30, vocab=WORDS):
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def paraphrase(rng, text, edits=2):
    words = text.split() or ["x"]
    for _ in range(edits):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.3 and len(words) > 1:
            del words[i]
        elif op < 0.6:
            words.insert(i, rng.choice(WORDS))
        else:
            words[i] = rng.choice(WORDS).upper() + rng.choice([",", "!", "", "..."])
    return " ".join(words)


def test_tokenizer_matches_rouge_score():
    rng = random.Random(0)
    alphabet = "abcXYZ019 \t\n.,;:!?'\"-_/é€ÄİK\u00a0"
    texts = ["", "   ", "!!!", "Hello, World!", "don't-stop_me now", "naïve café 42nd"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)]
    for t in texts:
        assert rouge_tokenize(t) == rs_tokenize.tokenize(t, None), t


def test_lcs_length_any_length():
    rng = random.Random(1)

    def dp(a, b):
        row = [0] * (len(b) + 1)
        for x in a:
            prev = 0
            for j, y in enumerate(b):
                cur = row[j + 1]
                row[j + 1] = prev + 1 if x == y else max(row[j + 1], row[j])
                prev = cur
        return row[-1]

    for m, n in [(0, 5), (1, 1), (63, 64), (64, 64), (65, 70), (130, 20), (250, 300)]:
        for _ in range(5):
            a = [rng.randrange(6) for _ in range(m)]
            b = [rng.randrange(6) for _ in range(n)]
            assert lcs_length(a, b) == dp(a, b) == lcs_length(b, a)


def test_rouge_l_f_identical():
    rng = random.Random(2)
    texts = make_texts(rng, 60) + make_texts(rng, 6, 65, 90) + make_texts(rng, 3, 200, 260)
    texts += ["", "?!", "Write a POEM, about the sea."]
    pairs = [(rng.choice(texts), rng.choice(texts)) for _ in range(400)]
    pairs += [(t, paraphrase(rng, t)) for t in texts]
    for a, b in pairs:
        assert rouge_l_f(rouge_tokenize(a), rouge_tokenize(b)) == ref_f(a, b)


def boundary_pairs():
    """Pairs whose LCS sits exactly at 20*L == 7*(m+n), where the float F decides."""
    for m in range(2, 80):
        for n in range(2, 80):
            if (m + n) % 20 == 0 and 7 * (m + n) // 20 <= min(m, n):
                L = 7 * (m + n) // 20
                shared = [f"s{i}" for i in range(L)]
                yield " ".join(shared + [f"a{i}" for i in range(m - L)]), " ".join(
                    [f"b{i}" for i in range(n - L)] + shared)


def test_boundary_decisions():
    outcomes = set()
    for cand, ref in boundary_pairs():
        (d,) = filter_near_duplicates([cand], [ref])
        f = ref_f(cand, ref)
        assert d.max_similarity == f and d.kept == (not f > 0.7), (cand, ref)
        outcomes.add(d.kept)
    assert outcomes == {True, False}  # the boundary really splits both ways


def test_in_batch_duplicates_and_edge_cases():
    ds = filter_near_duplicates(["Write a poem.", "write a POEM!", "", "...", "", "new thing"], [])
    assert [d.kept for d in ds] == [True, False, True, True, True, True]
    assert ds[1].max_similarity == 1.0 and ds[1].most_similar == "Write a poem."
    assert ds[2] == dedup.DedupDecision(True, 0.0, None)  # empty scores F = 0, like rouge_score
    assert ds[5].most_similar is None
    assert filter_near_duplicates([], ["a"]) == []
    # a rejected candidate does not join the pool: the third copy matches the first
    ds = filter_near_duplicates(["a b c d", "a b c d", "a b c d e"], ["x y"])
    assert [d.kept for d in ds] == [True, False, False]
    assert ds[2].most_similar == "a b c d"


@pytest.mark.parametrize("chunk", [7, 256])
def test_filter_matches_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(dedup, "_CHUNK", chunk)  # small chunks: in-batch matches across chunks
    rng = random.Random(3)
    pool = make_texts(rng, 150) + make_texts(rng, 4, 65, 90) + make_texts(rng, 2, 200, 240)
    pool += ["", "!!", pool[0]]
    cands = make_texts(rng, 50)
    cands += [paraphrase(rng, rng.choice(pool), rng.randint(0, 4)) for _ in range(40)]
    cands += [paraphrase(rng, p, rng.randint(0, 12)) for p in pool[150:156]]  # long ones
    cands += make_texts(rng, 3, 70, 80) + ["", "?!"]
    cands += [paraphrase(rng, c, rng.randint(0, 3)) for c in cands[:20]]  # in-batch near-dups
    rng.shuffle(cands)
    got = filter_near_duplicates(cands, pool)
    want = ref_filter(cands, pool)
    assert [(d.kept, d.max_similarity) for d in got] == want
    kept_before = []
    for c, d in zip(cands, got):  # most_similar really attains the maximum
        if d.most_similar is None:
            assert d.max_similarity == 0.0
        else:
            assert d.most_similar in pool or d.most_similar in kept_before
            assert ref_f(c, d.most_similar) == d.max_similarity
        if d.kept:
            kept_before.append(c)
    kinds = {d.kept for d in got}
    assert kinds == {True, False}


def test_threshold_parameter():
    rng = random.Random(4)
    pool = make_texts(rng, 80)
    cands = [paraphrase(rng, rng.choice(pool), 3) for _ in range(30)] + make_texts(rng, 30)
    for thr in (0.5, 0.9):
        got = filter_near_duplicates(cands, pool, threshold=thr)
        assert [(d.kept, d.max_similarity) for d in got] == ref_filter(cands, pool, thr)
