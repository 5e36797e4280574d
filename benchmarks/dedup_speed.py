"""Time filter_near_duplicates at paper scale (70K pool x 6K candidates).

Synthetic instruction-like texts: 5-40 words from a Zipf vocabulary, ~5 % of the
candidates are light paraphrases of pool entries (so both outcomes occur).
Usage: python benchmarks/dedup_speed.py [--pool 70000] [--cands 6000] [--check 200]
       python benchmarks/dedup_speed.py --smoke    # tiny sizes, the same stages and JSON keys
The last line printed is one JSON object with the figures (benchmarks/stages.py).
"""

import argparse
import random
import resource
import time

from stages import Stages

from lionflow.dedup import filter_near_duplicates

run = Stages("dedup_speed")


def make_corpus(n_pool, n_cands, seed=0, vocab_size=20000):
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(vocab_size)]
    weights = [1.0 / (r + 1) for r in range(vocab_size)]

    def sentence():
        words = rng.choices(vocab, weights, k=rng.randint(5, 40))
        words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice([".", "?", "!", ":"])

    def paraphrase(text):
        words = text.split()
        for _ in range(rng.randint(1, 3)):  # drop, replace or swap a word
            op, i = rng.random(), rng.randrange(len(words))
            if op < 0.33 and len(words) > 3:
                del words[i]
            elif op < 0.66:
                words[i] = rng.choice(vocab)
            else:
                j = rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
        return " ".join(words)

    pool = [sentence() for _ in range(n_pool)]
    cands = [paraphrase(rng.choice(pool)) if rng.random() < 0.05 else sentence() for _ in range(n_cands)]
    return pool, cands


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=70000)
    ap.add_argument("--cands", type=int, default=6000)
    ap.add_argument("--check", type=int, default=0, help="verify this many candidates vs rouge_score")
    args = run.parse(ap, smoke=dict(pool=2000, cands=200, check=1))
    run.stage("corpus")
    pool, cands = make_corpus(args.pool, args.cands)
    run.stage("dedup")
    t0, c0 = time.perf_counter(), time.process_time()
    decisions = filter_near_duplicates(cands, pool)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rejected = sum(not d.kept for d in decisions)
    print(f"{len(cands)} candidates x {len(pool)} pool: {dt:.2f} s wall ({cpu:.2f} s CPU), "
          f"rejected {rejected} ({100 * rejected / len(cands):.1f} %), peak RSS {rss:.0f} MiB")
    run.figures |= {"pool": len(pool), "candidates": len(cands), "dedup_s": round(dt, 3), "dedup_cpu_s": round(cpu, 3),
                    "rejected": rejected, "peak_rss_mib": round(rss), "checked_vs_rouge_score": 0}
    if args.check:
        run.stage("check")  # brute-force max similarity for a sample (slow: ~seconds per candidate)
        from rouge_score import rouge_scorer

        sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        rng = random.Random(1)
        for i in rng.sample(range(len(cands)), args.check):
            refs = pool + [c for c, d in zip(cands[:i], decisions[:i]) if d.kept]
            best = max(sc.score(cands[i], r)["rougeL"].fmeasure for r in refs)
            assert best == decisions[i].max_similarity, (i, best, decisions[i])
        print(f"checked {args.check} candidates against rouge_score: identical")
        run.figures["checked_vs_rouge_score"] = args.check


if __name__ == "__main__":
    run.main(main)
