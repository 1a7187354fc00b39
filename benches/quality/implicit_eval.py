"""Train and score Python `implicit` ALS on an affinity split, with affinity's metrics.

Reads train.csv / valid.csv / test.csv written by `affinity-trainer split`, tunes
implicit's ALS on the validation part with the same number of candidates affinity gets
(or reuses the parameters a previous run chose, `--params`), refits on train + validation and scores the test part exactly as `affinity-trainer
evaluate` does: Recall@K = hits / min(K, |test|) (and hits / |test|), NDCG@K with binary
relevance, HR@K, MRR@K and catalogue coverage; held-out items never seen in training
count as misses; leave-one-out keeps the test item rankable even if it is in the history.
Benchmarks only: never a test dependency.
"""
import argparse
import csv
import json
import math
import random
import time

import numpy as np
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits


def read(path):
    with open(path, newline="") as f:
        return [(r["user_id"], r["item_id"]) for r in csv.DictReader(f)]


def matrix(pairs, users, items):
    rows, cols = [], []
    for u, i in set(pairs):
        rows.append(users.setdefault(u, len(users)))
        cols.append(items.setdefault(i, len(items)))
    n_u, n_i = len(users), len(items)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_u, n_i))


def targets(protocol, fit_pairs, held_pairs):
    history = {}
    if protocol == "temporal":
        for u, i in fit_pairs:
            history.setdefault(u, set()).add(i)
    rel = {}
    for u, i in held_pairs:
        if i in history.get(u, ()):
            continue
        lst = rel.setdefault(u, [])
        if i not in lst:
            lst.append(i)
    return rel


def score(model, x, users, items, rel, protocol, ks):
    inv_items = {v: k for k, v in items.items()}
    max_k = max(ks)
    names = sorted(rel)
    lists = []
    uf, itf = model.user_factors, model.item_factors
    for start in range(0, len(names), 512):
        batch = names[start:start + 512]
        idx = [users.get(u) for u in batch]
        known = [j for j in idx if j is not None]
        scores = np.asarray(uf[known] @ itf.T) if known else None
        row = 0
        for u, j in zip(batch, idx):
            relevant = rel[u]
            if j is None:
                lists.append(([], relevant))
                continue
            s = scores[row].copy()
            row += 1
            seen = x[j].indices
            s[seen] = -np.inf
            if protocol == "loo":
                for it in relevant:
                    if it in items and items[it] in set(seen):
                        ii = items[it]
                        s[ii] = float(uf[j] @ itf[ii])
            top = np.argpartition(-s, min(max_k, len(s) - 1))[:max_k]
            top = top[np.lexsort((top, -s[top]))]
            lists.append(([inv_items[t] for t in top if np.isfinite(s[t])], relevant))
    n_train_items = max(1, int((np.asarray(x.sum(axis=0)).ravel() > 0).sum()))
    out = []
    for k in ks:
        tot = dict(recall=0.0, recall_full=0.0, ndcg=0.0, hr=0.0, mrr=0.0)
        distinct = set()
        for ranked, relevant in lists:
            rs = set(relevant)
            hits, dcg, first = 0, 0.0, None
            for r, it in enumerate(ranked[:k]):
                if it in rs:
                    hits += 1
                    dcg += 1.0 / math.log2(r + 2)
                    if first is None:
                        first = r
            ideal = min(k, len(rs))
            idcg = sum(1.0 / math.log2(r + 2) for r in range(ideal))
            tot["recall"] += hits / ideal
            tot["recall_full"] += hits / len(rs)
            tot["ndcg"] += dcg / idcg
            tot["hr"] += 1.0 if hits else 0.0
            tot["mrr"] += 0.0 if first is None else 1.0 / (first + 1)
            distinct.update(ranked[:k])
        n = max(1, len(lists))
        m = {key: v / n for key, v in tot.items()}
        m.update(k=k, coverage=len(distinct) / n_train_items, users=len(lists))
        out.append(m)
    return out


def fit(x, p, seed):
    model = AlternatingLeastSquares(
        factors=p["factors"], regularization=p["regularization"], alpha=p["alpha"],
        iterations=p["iterations"], random_state=seed, calculate_training_loss=False,
    )
    model.fit(x, show_progress=False)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", required=True)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--k", default="10,20")
    ap.add_argument("--json", required=True)
    ap.add_argument("--params", help="JSON file of a previous run: reuse its chosen parameters, no tuning")
    a = ap.parse_args()
    info = json.load(open(f"{a.split}/split.json"))
    protocol = info["protocol"]
    ks = [int(k) for k in a.k.split(",")]
    train, valid, test = (read(f"{a.split}/{n}.csv") for n in ("train", "valid", "test"))

    rng = random.Random(a.seed)
    grid = [dict(factors=64, regularization=0.01, alpha=1.0, iterations=15)]
    while len(grid) < a.trials:
        grid.append(dict(
            factors=rng.choice([32, 64, 96, 128]),
            regularization=math.exp(rng.uniform(math.log(0.001), math.log(10.0))),
            alpha=rng.choice([1.0, 5.0, 10.0, 20.0, 40.0]),
            iterations=15,
        ))
    with threadpool_limits(limits=1, user_api="blas"):
        users, items = {}, {}
        x = matrix(train, users, items)
        rel = targets(protocol, train, valid)
        best, best_ndcg, trials = None, -1.0, []
        if a.params:
            best, grid = json.load(open(a.params))["params"], []
        for p in grid:
            m = fit(x, p, a.seed)
            ndcg = score(m, x, users, items, rel, protocol, [10])[0]["ndcg"]
            trials.append(dict(params=p, valid_ndcg10=ndcg))
            if ndcg > best_ndcg:
                best, best_ndcg = p, ndcg
        users, items = {}, {}
        x = matrix(train + valid, users, items)
        t0 = time.perf_counter()
        m = fit(x, best, a.seed)
        fit_s = time.perf_counter() - t0
        metrics = score(m, x, users, items, targets(protocol, train + valid, test), protocol, ks)
    json.dump(dict(name="implicit ALS", params=best, fit_seconds=fit_s, metrics=metrics, trials=trials),
              open(a.json, "w"), indent=2)
    m10 = metrics[0]
    print(f"implicit ALS {best}: R@10 {m10['recall']:.4f} NDCG@10 {m10['ndcg']:.4f} HR@10 {m10['hr']:.4f} fit {fit_s:.2f}s")


if __name__ == "__main__":
    main()
