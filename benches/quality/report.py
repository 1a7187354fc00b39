"""Collects the quality benchmark's JSON files into benches/results/quality.{md,json}."""
import json
import sys

out_dir, runs = sys.argv[1], sys.argv[2:]
rows, everything = [], []
for path in runs:
    r = json.load(open(path))
    everything.append(r)
    rows.append(f"\n### {r['dataset']} ({r['protocol']}, seed {r['seed']})\n")
    rows.append("| model | params | R@10 | NDCG@10 | HR@10 | MRR@10 | Cov@10 | R@20 | NDCG@20 | fit s |")
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    for m in r["models"]:
        by_k = {x["k"]: x for x in m["metrics"]}
        a, b = by_k.get(10, {}), by_k.get(20, {})
        p = m.get("params", {})
        short = {k: v for k, v in p.items() if not isinstance(v, dict)} if isinstance(p, dict) else p
        if m["name"].startswith("affinity") and isinstance(p, dict) and "als" in p:
            short = {"factors": p["als"]["factors"], "lambda": round(p["als"]["regularization"], 2),
                     "alpha": p["als"]["alpha"], "blend": round(p["sequence"]["blend"], 3)}
        short = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in short.items()} if isinstance(short, dict) else short
        rows.append(
            f"| {m['name']} | `{json.dumps(short)}` | {a.get('recall', 0):.4f} | {a.get('ndcg', 0):.4f} | "
            f"{a.get('hr', 0):.4f} | {a.get('mrr', 0):.4f} | {a.get('coverage', 0):.3f} | "
            f"{b.get('recall', 0):.4f} | {b.get('ndcg', 0):.4f} | {m['fit_seconds']:.2f} |")
head = """# Quality, side by side

Written by `benches/quality/run.sh`. Same split files for every system, same run. Tuning
uses the validation part only, with the same number of candidates per system; the final
fit uses train + validation and is scored on test. affinity is scored through the
server's code path. R = hits / min(K, |test|). Fit seconds on the 2-core benchmark machine
(affinity's include building three HNSW indexes).
"""
open(f"{out_dir}/quality.md", "w").write(head + "\n".join(rows) + "\n")
json.dump(everything, open(f"{out_dir}/quality.json", "w"), indent=2)
print(head + "\n".join(rows))
