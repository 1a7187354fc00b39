"""Collects the quality benchmark's JSON files into benches/results/quality.{md,json}.

Per data set: the seed-42 table with every metric, then (for random splits run over
several seeds) mean ± standard deviation of the headline metrics over the seeds.
"""
import json
import statistics
import sys
from collections import defaultdict

out_dir, paths = sys.argv[1], sys.argv[2:]
runs = defaultdict(list)
for path in paths:
    r = json.load(open(path))
    runs[r["dataset"]].append(r)


def short_params(m):
    p = m.get("params", {})
    if m["name"].startswith("affinity") and isinstance(p, dict) and "als" in p:
        p = {"factors": p["als"]["factors"], "lambda": p["als"]["regularization"],
             "alpha": p["als"]["alpha"], "blend": p["sequence"]["blend"]}
    if isinstance(p, dict):
        p = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items() if not isinstance(v, dict)}
    return json.dumps(p)


def at(m, k):
    return next((x for x in m["metrics"] if x["k"] == k), {})


rows = []
summary = []
for dataset in sorted(runs):
    rs = sorted(runs[dataset], key=lambda r: r["seed"])
    first = rs[0]
    rows.append(f"\n## {dataset} ({first['protocol']})\n")
    rows.append(f"### seed {first['seed']}\n")
    rows.append("| model | params | R@10 | NDCG@10 | HR@10 | MRR@10 | Cov@10 | R@20 | NDCG@20 | fit s |")
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    for m in first["models"]:
        a, b = at(m, 10), at(m, 20)
        rows.append(
            f"| {m['name']} | `{short_params(m)}` | {a.get('recall', 0):.4f} | {a.get('ndcg', 0):.4f} | "
            f"{a.get('hr', 0):.4f} | {a.get('mrr', 0):.4f} | {a.get('coverage', 0):.3f} | "
            f"{b.get('recall', 0):.4f} | {b.get('ndcg', 0):.4f} | {m['fit_seconds']:.2f} |")
    if len(rs) > 1:
        seeds = [r["seed"] for r in rs]
        rows.append(f"\n### mean ± std over seeds {seeds[0]}–{seeds[-1]} ({len(seeds)} splits)\n")
        rows.append("| model | R@10 | NDCG@10 | HR@10 | R@20 | NDCG@20 | fit s |")
        rows.append("|---|---|---|---|---|---|---|")
        for m in first["models"]:
            per = [next(x for x in r["models"] if x["name"] == m["name"]) for r in rs]

            def ms(k, key):
                v = [at(x, k).get(key, 0.0) for x in per]
                return statistics.mean(v), statistics.stdev(v)

            cells = [ms(10, "recall"), ms(10, "ndcg"), ms(10, "hr"), ms(20, "recall"), ms(20, "ndcg")]
            fit = statistics.mean(x["fit_seconds"] for x in per)
            rows.append(f"| {m['name']} | " + " | ".join(f"{a:.4f} ± {s:.4f}" for a, s in cells) + f" | {fit:.2f} |")
            summary.append(dict(dataset=dataset, protocol=first["protocol"], seeds=seeds, model=m["name"],
                                recall10=cells[0], ndcg10=cells[1], hr10=cells[2], recall20=cells[3],
                                ndcg20=cells[4], fit_seconds=fit))
head = """# Quality, side by side

Written by `benches/quality/run.sh`. Same split files for every system, same run. Each
system is tuned on the validation part of the seed-42 split with the same number of
candidates; the chosen parameters are fit on train + validation and scored on test, for
seed 42 and (random splits) four more seeds. affinity is scored through the server's code
path. R = hits / min(K, |test|). Fit seconds on the 2-core benchmark machine (affinity's
include everything `train` does; catalogues up to 20,000 items are scored exactly and
need no HNSW index).
"""
text = head + "\n".join(rows) + "\n"
open(f"{out_dir}/quality.md", "w").write(text)
json.dump(dict(summary=summary, runs=[r for d in sorted(runs) for r in sorted(runs[d], key=lambda r: r["seed"])]),
          open(f"{out_dir}/quality.json", "w"), indent=2)
print(text)
