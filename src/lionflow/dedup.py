"""Exact ROUGE-L near-duplicate filtering for generated instructions.

A candidate is rejected when its ROUGE-L F-measure against any pool instruction, or any
candidate kept earlier in the batch, is > threshold. Scores are bit-identical to
``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)`` with
``score(target=candidate, prediction=reference)`` (Alpaca/Lion call order), but brute
force is far too slow at paper scale (6K x 70K), so we:

1. bound every pair cheaply: LCS <= multiset token overlap, so F <= 2*overlap/(m+n).
   Overlaps for all pairs are dot products of "layered" binary features ((token, k) =
   "token occurs >= k times"), computed chunk-wise as dense BLAS products for the few
   very frequent features plus sparse products for the rest;
2. branch and bound per candidate: exact F (bit-parallel LCS, vectorised over many pairs
   with uint64 words) in decreasing-bound order until no remaining bound can beat the best.
This yields the exact maximum similarity, and the kept/rejected decision follows from it.
rouge_score is only a test dependency.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import scipy.sparse as sp

_TOKEN_RE = re.compile(r"[a-z0-9]+")
# float32 bounds carry ~1e-7 relative error; widen every pruning test by this margin.
_EPS = 1e-6
_CHUNK = 256  # (<= 2**16 for the uint16 row sort) candidates per overlap block: 256 x 76K float32 ~ 78 MB
_FLOOR = 0.3  # first pass: only pairs whose bound is >= this
_BUCKETS = 256  # bound quantisation for the branch-and-bound visiting order
_MAX_DENSE = 128  # most frequent features handled by dense BLAS


def rouge_tokenize(text: str) -> list[str]:
    """rouge_score's tokenizer without stemming: lowercase, maximal [a-z0-9] runs."""
    return _TOKEN_RE.findall(text.lower())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Exact LCS length, bit-parallel (Allison-Dix/Hyyro); Python ints make any length work."""
    if not a or not b:
        return 0
    masks: dict = {}
    for i, t in enumerate(a):
        masks[t] = masks.get(t, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for t in b:
        u = v & masks.get(t, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()  # zero bits of v = LCS length


def _f_measure(lcs, m, n):
    """rouge_score's float formula (target length m, prediction length n); works on arrays."""
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 only where lcs == 0
        p, r = lcs / n, lcs / m
        return np.where(lcs > 0, 2 * p * r / (p + r), 0.0)


def rouge_l_f(a_tokens: Sequence[str], b_tokens: Sequence[str]) -> float:
    """ROUGE-L F as rouge_score.score(target=a, prediction=b) computes it."""
    if not a_tokens or not b_tokens:
        return 0.0
    lcs = lcs_length(a_tokens, b_tokens)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b_tokens), lcs / len(a_tokens)
    return 2 * p * r / (p + r)


@dataclass
class DedupDecision:
    kept: bool
    max_similarity: float
    most_similar: str | None


class _Corpus:
    """Token ids of all documents: pool rows first, then candidates."""

    def __init__(self, docs: list[list[str]]):
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(w, len(vocab)) for w in d] for d in docs]
        self.V = len(vocab)  # also the padding id
        self.lens = np.array([len(d) for d in ids], dtype=np.int64)
        self.off = np.concatenate([[0], np.cumsum(self.lens)])
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(self.off[-1]))
        # trailing padding so a padded window read past the last document stays in range
        self.flat = np.concatenate([flat, np.full(max(int(self.lens.max(initial=0)), 1), self.V)])
        self.ids = ids

    def features(self) -> sp.csr_matrix:
        """Layered binary features: dot(x_a, x_b) = sum_t min(count_a(t), count_b(t))."""
        n_docs, V = len(self.lens), self.V
        doc = np.repeat(np.arange(n_docs), self.lens)
        keys, counts = np.unique(doc * (V + 1) + self.flat[: len(doc)], return_counts=True)
        d, t = keys // (V + 1), keys % (V + 1)
        rep = np.repeat(np.arange(len(keys)), counts)
        layer = np.arange(len(rep)) - np.repeat(np.cumsum(counts) - counts, counts)
        _, feat = np.unique(t[rep] * (int(counts.max(initial=1)) + 1) + layer, return_inverse=True)
        data = np.ones(len(rep), dtype=np.float32)
        return sp.csr_matrix((data, (d[rep], feat)), shape=(n_docs, int(feat.max(initial=-1)) + 1))


def _split_features(X: sp.csr_matrix, n_pool: int):
    """Dense (frequent) and sparse (rare) feature blocks; frequent ones would make the
    sparse product nearly dense and slow, while BLAS handles them at full speed."""
    df = np.bincount(X[:n_pool].indices, minlength=X.shape[1]) if n_pool else np.zeros(X.shape[1])
    order = np.argsort(-df, kind="stable")
    dense = order[: min(_MAX_DENSE, int((df > 0.01 * max(n_pool, 1)).sum()))]
    rare = np.setdiff1d(np.arange(X.shape[1]), dense)
    Xd = np.ascontiguousarray(X[:, dense].toarray())
    Xs = X[:, rare].tocsr()
    return Xd, np.ascontiguousarray(Xd.T), Xs, Xs.T.tocsr()


def _ranges(starts, lengths):
    """Concatenation of arange(s, s+l) for each (s, l)."""
    total = int(lengths.sum())
    base = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return base + np.arange(total)


class _ChunkLCS:
    """Exact F for (chunk candidate, document) pairs; bit-parallel LCS vectorised over
    pairs with one uint64 word per candidate (m <= 64), Python ints beyond that."""

    def __init__(self, corpus: _Corpus, cand_docs: np.ndarray, gmap: np.ndarray):
        self.c, self.docs, self.gmap = corpus, cand_docs, gmap
        m = corpus.lens[cand_docs]
        self.m = m
        short = np.flatnonzero((m > 0) & (m <= 64))
        toks = corpus.flat[_ranges(corpus.off[cand_docs[short]], m[short])]
        self.uniq = np.unique(toks)
        gmap[self.uniq] = np.arange(1, len(self.uniq) + 1)  # 0 = not in any chunk candidate
        self.table = np.zeros((len(cand_docs), len(self.uniq) + 1), dtype=np.uint64)
        rows = np.repeat(short, m[short])
        pos = np.arange(len(rows)) - np.repeat(np.cumsum(m[short]) - m[short], m[short])
        np.bitwise_or.at(self.table, (rows, gmap[toks]), np.left_shift(np.uint64(1), pos.astype(np.uint64)))
        # all-ones in the low m bits (m == 64 -> every bit; uint64 wrap-around drops the carry)
        self.full = np.where(m >= 64, np.uint64(2**64 - 1),
                             (np.left_shift(np.uint64(1), np.minimum(m, 63).astype(np.uint64)) - np.uint64(1)))

    def release(self):
        self.gmap[self.uniq] = 0

    def f(self, rows: np.ndarray, docs: np.ndarray) -> np.ndarray:
        c = self.c
        L = np.zeros(len(rows), dtype=np.int64)
        long_ = self.m[rows] > 64
        for k in np.flatnonzero(long_):
            L[k] = lcs_length(c.ids[self.docs[rows[k]]], c.ids[docs[k]])
        short = np.flatnonzero(~long_)
        short = short[np.argsort(c.lens[docs[short]], kind="stable")]  # similar lengths -> less padding
        n_sorted, s = c.lens[docs[short]], 0
        while s < len(short):
            # batch of pairs whose padded W x P mask block stays ~32 MB, even for long documents
            e = min(s + (1 << 15), len(short))
            while e - s > 1 and (e - s) * n_sorted[e - 1] > 1 << 22:
                e = s + (e - s) // 2
            sel, s = short[s:e], e
            r, d = rows[sel], docs[sel]
            n = c.lens[d]
            W = int(n.max())
            col = np.arange(W)
            toks = np.where(col[:, None] < n, c.flat[c.off[d] + col[:, None]], c.V)  # W x P
            M = self.table[r, self.gmap[toks]]
            full = self.full[r]
            v = full.copy()
            for k in range(W):
                u = v & M[k]
                v = ((v + u) | (v - u)) & full
            L[sel] = self.m[r] - np.bitwise_count(v)
        return _f_measure(L, self.m[rows], c.lens[docs])


def _branch_and_bound(r, j, b, exact_f, best, arg):
    """Per row: raise best/arg (in place) to the exact max of exact_f over the row's
    (j, bound b) pairs, visiting pairs by decreasing bound in doubling rounds and
    stopping once no remaining bound can beat the best."""
    n_rows = len(best)
    # bucketed bounds + two stable radix sorts (uint8/uint16 keys) instead of a costly
    # full sort; the bucket's upper edge stands in for the bound, which stays valid
    q = np.minimum(b * _BUCKETS, _BUCKETS - 1).astype(np.uint8)
    order = np.argsort(_BUCKETS - 1 - q, kind="stable")
    order = order[np.argsort(r[order].astype(np.uint16), kind="stable")]
    r, j, b = r[order], j[order], (q[order] + 1.0) / _BUCKETS
    start = np.searchsorted(r, np.arange(n_rows))
    end = np.searchsorted(r, np.arange(n_rows), side="right")
    pos = start.copy()
    active = np.flatnonzero(end > start)
    active, k = active[b[start[active]] + _EPS > best[active]], 8
    while active.size:
        take = np.minimum(end[active] - pos[active], k)
        idx = _ranges(pos[active], take)
        f = exact_f(np.repeat(active, take), j[idx])
        gstart = np.cumsum(take) - take
        gmax = np.maximum.reduceat(f, gstart)
        hit = np.flatnonzero(f == np.repeat(gmax, take))
        first = hit[np.unique(np.searchsorted(gstart, hit, side="right") - 1, return_index=True)[1]]
        better = gmax > best[active]  # strict: keep the earlier (higher-bound) match on ties
        best[active[better]] = gmax[better]
        arg[active[better]] = j[idx[first[better]]]
        pos[active] += take
        nxt = np.minimum(pos[active], len(b) - 1)
        active = active[(pos[active] < end[active]) & (b[nxt] + _EPS > best[active])]
        k *= 2


def filter_near_duplicates(
    candidates: Sequence[str], pool: Sequence[str], threshold: float = 0.7, *, within_batch: bool = True
) -> list[DedupDecision]:
    """Keep candidates in order unless ROUGE-L F > threshold vs the pool or an earlier kept one.

    within_batch=False: against the pool only (each candidate's nearest pool text, e.g. the
    evaluation sets of decontamination), so decisions do not depend on the candidates' order."""
    n_pool, n_cand = len(pool), len(candidates)
    if n_cand == 0:
        return []
    corpus = _Corpus([rouge_tokenize(t) for t in chain(pool, candidates)])
    Xd, XdT, Xs, XsT = _split_features(corpus.features(), n_pool)
    lens32 = corpus.lens.astype(np.float32)
    gmap = np.zeros(corpus.V + 1, dtype=np.int64)
    kept = np.zeros(n_cand, dtype=bool)
    out: list[DedupDecision] = []

    # preallocated: fresh 80 MB temporaries each chunk cost more in page faults than the maths
    buf = np.empty((min(_CHUNK, n_cand), len(corpus.lens)), dtype=np.float32)
    for c0 in range(0, n_cand, _CHUNK):
        docs = np.arange(n_pool + c0, n_pool + min(c0 + _CHUNK, n_cand))
        # bounds 2*overlap/(m+n) of chunk candidates vs every document (pool, then candidates)
        B = buf[: len(docs)]
        np.matmul(Xd[docs], XdT, out=B)
        s = Xs[docs] @ XsT  # canonical CSR: no duplicate entries, so a plain += is safe
        B.reshape(-1)[np.repeat(np.arange(len(docs)) * B.shape[1], np.diff(s.indptr)) + s.indices] += s.data
        scale: dict[int, np.ndarray] = {}
        for row, m in enumerate(corpus.lens[docs].tolist()):
            if m not in scale:
                scale[m] = (2 / np.maximum(m + lens32, 1)).astype(np.float32)
            B[row] *= scale[m]
        lcs = _ChunkLCS(corpus, docs, gmap)

        # pool, pass 1: branch and bound over pairs with bound >= _FLOOR (few per row)
        best, arg = np.zeros(len(docs)), np.full(len(docs), -1)
        r, j = np.divmod(np.flatnonzero(B[:, :n_pool] >= _FLOOR), n_pool)
        _branch_and_bound(r, j, B[r, j], lcs.f, best, arg)
        # pass 2, rows whose best could still be beaten below the floor: the exact F of the
        # row's top-bound pair is a lower bound that prunes most of the many low-bound pairs
        redo = np.flatnonzero(best < _FLOOR + _EPS)
        if redo.size and n_pool:
            sub = B[redo, :n_pool]
            top = sub.argmax(axis=1)
            b_redo, a_redo = best[redo], arg[redo]
            f_top = lcs.f(redo, top)
            up = f_top > b_redo
            b_redo[up], a_redo[up] = f_top[up], top[up]
            keep = (sub > (b_redo - _EPS)[:, None]) & (sub < _FLOOR) & (sub > 0)
            r, j = np.divmod(np.flatnonzero(keep), n_pool)
            _branch_and_bound(r, j, sub[r, j], lambda x, y, lcs=lcs, redo=redo: lcs.f(redo[x], y), b_redo, a_redo)
            best[redo], arg[redo] = b_redo, a_redo

        # earlier kept candidates: sequential, since kept[] depends on previous decisions
        for row, doc in enumerate(docs):
            i = doc - n_pool
            cb = B[row, n_pool:doc]
            prev = np.flatnonzero(kept[:i] & (cb > 0) & (cb + _EPS > best[row]))
            if prev.size and within_batch:
                f = lcs.f(np.full(prev.size, row), prev + n_pool)
                top = int(np.argmax(f))
                if f[top] > best[row]:
                    best[row], arg[row] = f[top], prev[top] + n_pool
            kept[i] = not best[row] > threshold
            a = int(arg[row])
            text = None if a < 0 else (pool[a] if a < n_pool else candidates[a - n_pool])
            out.append(DedupDecision(bool(kept[i]), float(best[row]), text))
        lcs.release()
    return out
