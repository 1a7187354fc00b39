"""Storefront benchmark: quality as a new user gets it, with no labels and no parameter file.

Every shared data set is exported the way a storefront sends events: every event `view`,
no value; unix timestamps where the data has them (MovieLens), the sequence position for
sequence data (Amazon Beauty), none for LastFM and FilmTrust. Per data set, on one
seeded split written by `affinity-trainer split`:

  1. plain `affinity-trainer train` on train + validation (it tunes itself; no --params),
  2. `affinity-server` serves the model, `affinity-client recommend --users-file` asks
     for every test user's top 10 over gRPC,
  3. this script scores the client's output against test.csv,
  4. `affinity-trainer evaluate --split` fits EASE (λ chosen on validation) and ItemKNN
     on the same files, for comparison and for EASE's fit time.

Run from the repository root (release build; loopback only; ~15 minutes on 2 cores):

    python3 benches/quality/storefront.py [--seed 42] [--only movielens-100k,...]

Writes benches/results/storefront.{md,json} (with --only, the other data sets keep the
results of their last run). With `--seeds N` it repeats every data set on seeds
`--seed`, `--seed` + 1, … and writes benches/results/storefront-seeds.{md,json} instead: per
seed and as mean ± standard deviation, with affinity's paired difference from EASE (one
split is too few to tell systems within a percent of each other apart).
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import OrderedDict, defaultdict

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "..", "shared", "datasets")
WORK = os.path.join(ROOT, "benches", ".work", "storefront")
RESULTS = os.path.join(ROOT, "benches", "results")
BIN = os.path.join(ROOT, "target", "release")
OUT = "storefront"

# name, importer, input, protocol, keep timestamps
SETS = [
    ("movielens-100k", "movielens", "movielens-100k", "random", True),
    ("lastfm-hetrec", "lastfm", "lastfm-hetrec", "random", False),
    ("filmtrust", "filmtrust", "filmtrust", "random", False),
    ("amazon-beauty", "sequence", "amazon-beauty/Beauty.txt", "loo", True),
]


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def views_only(src, dst, keep_time):
    with open(src, newline="") as f, open(dst, "w", newline="") as g:
        r = csv.DictReader(f)
        w = csv.writer(g, lineterminator="\n")
        w.writerow(["user_id", "item_id", "event", "timestamp", "value"])
        for row in r:
            w.writerow([row["user_id"], row["item_id"], "view", row["timestamp"] if keep_time else "", ""])


def read_events(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def targets(test_rows):
    rel = OrderedDict()
    for row in test_rows:
        items = rel.setdefault(row["user_id"], [])
        if row["item_id"] not in items:
            items.append(row["item_id"])
    return rel


def score(lists, rel, k=10):
    recall = ndcg = hr = 0.0
    for user, items in rel.items():
        ranked = lists.get(user, [])[:k]
        relevant = set(items)
        hits = [i for i, x in enumerate(ranked) if x in relevant]
        ideal = min(k, len(relevant))
        recall += len(hits) / ideal
        ndcg += sum(1 / math.log2(i + 2) for i in hits) / sum(1 / math.log2(i + 2) for i in range(ideal))
        hr += 1.0 if hits else 0.0
    n = max(len(rel), 1)
    return {"recall": recall / n, "ndcg": ndcg / n, "hr": hr / n, "users": len(rel)}


def serve_and_query(model_root, users_file):
    server = subprocess.Popen([os.path.join(BIN, "affinity-server"), "--model", model_root, "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline().strip()
        assert line.startswith("listening on "), line
        addr = "http://" + line[len("listening on "):]
        client = os.path.join(BIN, "affinity-client")
        # Wait until the model is loaded: ModelInfo answers only then.
        for _ in range(600):
            if subprocess.run([client, "--addr", addr, "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        out = run(client, "--addr", addr, "--format", "tsv", "recommend", "--k", "10", "--users-file", users_file).stdout
    finally:
        server.terminate()
        server.wait()
    lists = {}
    for line in out.splitlines():
        user, items = line.split("\t", 1)
        lists[user] = items.split(",") if items else []
    return lists


def one(name, importer, source, protocol, keep_time, seed, as_imported):
    d = os.path.join(WORK, ("labelled-" if as_imported else "") + name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    trainer = os.path.join(BIN, "affinity-trainer")
    run(trainer, "import", importer, "--input", os.path.join(DATA, source), "--out", os.path.join(d, "data"))
    events = os.path.join(d, "views.csv")
    if as_imported:
        shutil.copy(os.path.join(d, "data", "events.csv"), events)
    else:
        views_only(os.path.join(d, "data", "events.csv"), events, keep_time)
    split = os.path.join(d, "split")
    run(trainer, "split", "--events", events, "--protocol", protocol, "--seed", str(seed), "--out", split)
    fit = os.path.join(d, "fit.csv")
    with open(fit, "w") as g:
        for part in ["train.csv", "valid.csv"]:
            with open(os.path.join(split, part)) as f:
                lines = f.readlines()
            g.writelines(lines if part == "train.csv" else lines[1:])
    models = os.path.join(d, "models")
    started = time.time()
    trained = run(trainer, "train", "--events", fit, "--out", models)
    train_seconds = time.time() - started
    version = open(os.path.join(models, "current")).read().strip()
    manifest = json.load(open(os.path.join(models, version, "manifest.json")))
    rel = targets(read_events(os.path.join(split, "test.csv")))
    users_file = os.path.join(d, "test-users.txt")
    with open(users_file, "w") as f:
        f.writelines(u + "\n" for u in rel)
    served = score(serve_and_query(models, users_file), rel)
    report = os.path.join(d, "baselines.json")
    run(trainer, "evaluate", "--split", split, "--baselines", "pop,itemknn,ease", "--k", "10", "--json", report)
    base = json.load(open(report))
    rows = [{"name": "affinity (plain train, served)", "fit_seconds": train_seconds, **served,
             "tuning": manifest.get("tuning"), "params": manifest["params"]}]
    for m in base["models"]:
        x = m["metrics"][0]
        label = "affinity (defaults, no tuning)" if m["name"] == "affinity" else m["name"]
        rows.append({"name": label, "fit_seconds": m["fit_seconds"], "recall": x["recall"], "ndcg": x["ndcg"],
                     "hr": x["hr"], "users": x["users"], "params": m["params"]})
    print(trained.stderr.strip().splitlines()[-1] if trained.stderr.strip() else "", file=sys.stderr)
    kind = "as imported (labels and values)" if as_imported else "views only, no values" + (
        ", timestamps" if keep_time else ", no timestamps")
    return {"dataset": name, "protocol": protocol, "seed": seed, "events": kind, "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", default="", help="comma-separated data set names")
    ap.add_argument("--seeds", type=int, default=1,
                    help="run each data set on this many seeds from --seed and report mean ± sd (storefront-seeds.*)")
    ap.add_argument("--report", action="store_true", help="only rewrite the report from its JSON")
    ap.add_argument("--as-imported", action="store_true",
                    help="keep the importers' event labels and values (label-rich rows; results in storefront-labelled.*)")
    a = ap.parse_args()
    global OUT
    OUT = "storefront-labelled" if a.as_imported else "storefront"
    if a.seeds > 1:
        OUT += "-seeds"
    if a.report:
        results = json.load(open(os.path.join(RESULTS, OUT + ".json")))
        if a.seeds > 1:
            write_seeds_report(results)
        else:
            write_report(results)
        return
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "affinity-trainer", "--bin", "affinity-server",
                    "--bin", "affinity-client"], check=True, cwd=ROOT)
    only = set(filter(None, a.only.split(",")))
    # Data sets not run this time keep their previous results.
    path = os.path.join(RESULTS, OUT + ".json")
    previous = {r["dataset"]: r for r in json.load(open(path))} if os.path.exists(path) and only else {}
    results = []
    for s in SETS:
        if only and s[0] not in only:
            if s[0] in previous:
                results.append(previous[s[0]])
            continue
        if a.seeds > 1:
            runs = []
            for seed in range(a.seed, a.seed + a.seeds):
                print(f"== {s[0]} ({s[3]}, seed {seed})", file=sys.stderr)
                runs.append(one(*s, seed, a.as_imported))
            results.append({"dataset": s[0], "protocol": s[3], "events": runs[0]["events"], "runs": runs})
        else:
            print(f"== {s[0]} ({s[3]})", file=sys.stderr)
            results.append(one(*s, a.seed, a.as_imported))
    os.makedirs(RESULTS, exist_ok=True)
    json.dump(results, open(path, "w"), indent=2)
    if a.seeds > 1:
        write_seeds_report(results)
    else:
        write_report(results)


def mean_sd(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def write_seeds_report(results):
    """Per data set: each system's figure per seed and its mean ± sd, then affinity's
    paired difference from EASE (mean ± sd over seeds, and how many seeds it was ≥ 0)."""
    md = ["# Storefront benchmark over seeds: views only, plain `train`, served over gRPC", "",
          "Command: `python3 benches/quality/storefront.py --seeds N [--seed S]`. Each seed is its own split, "
          "`train` run and served query of the test users, exactly as in `storefront.md`; mean ± standard "
          "deviation over the seeds, and affinity's paired difference from EASE on the same split.", ""]
    for r in results:
        loo = r["protocol"] == "loo"
        key, label = ("hr", "HR@10") if loo else ("recall", "R@10")
        seeds = [run["seed"] for run in r["runs"]]
        names = [row["name"] for row in r["runs"][0]["rows"]]
        md += [f"## {r['dataset']} ({r['protocol']}, seeds {seeds[0]}–{seeds[-1]}; {r['events']})", "",
               f"| system | {label} mean ± sd | NDCG@10 mean ± sd | {label} per seed |", "|---|---|---|---|"]
        by = {n: [next(row for row in run["rows"] if row["name"] == n) for run in r["runs"]] for n in names}
        for n in names:
            m, sd = mean_sd([row[key] for row in by[n]])
            nm, nsd = mean_sd([row["ndcg"] for row in by[n]])
            per = ", ".join(f"{row[key]:.4f}" for row in by[n])
            md.append(f"| {n} | {m:.4f} ± {sd:.4f} | {nm:.4f} ± {nsd:.4f} | {per} |")
        ours, ease = by.get("affinity (plain train, served)"), by.get("EASE")
        if ours and ease:
            parts = []
            for metric, name in [(key, label), ("ndcg", "NDCG@10")]:
                d = [a[metric] - b[metric] for a, b in zip(ours, ease)]
                m, sd = mean_sd(d)
                parts.append(f"{name} {m:+.4f} ± {sd:.4f} (≥ EASE on {sum(x >= 0 for x in d)} of {len(d)} seeds)")
            md += ["", "affinity − EASE, paired: " + "; ".join(parts) + "."]
        if loo:
            md += ["", "Leave-one-out holds out each user's last event whatever the seed, and `train` seeds "
                   "its search with `--tune-seed` (default 42): every seed is the same run."]
        md.append("")
    open(os.path.join(RESULTS, OUT + ".md"), "w").write("\n".join(md))
    print("\n".join(md))


def write_report(results):
    labelled = OUT != "storefront"
    title = "events as imported (labels, values)" if labelled else "views only"
    how = ("Events keep the importers' labels and values; " if labelled
           else "Every event exported as `view` with no value; ")
    md = [f"# Storefront benchmark: {title}, plain `train`, served over gRPC",
          "", f"Command: `python3 benches/quality/storefront.py{' --as-imported' if labelled else ''}`. " + how +
          "affinity is plain `affinity-trainer train` (self-tuning, no parameter file), served by `affinity-server` "
          "and queried with `affinity-client recommend --users-file`; baselines from `affinity-trainer evaluate "
          "--split` on the same files (EASE's λ chosen on the validation part). Fit seconds: affinity's is the "
          "whole `train` (search included); EASE's one fit.", ""]
    for r in results:
        k = "HR@10" if r["protocol"] == "loo" else "R@10"
        md += [f"## {r['dataset']} ({r['protocol']}, seed {r['seed']}; {r['events']})", "",
               f"| system | {k} | NDCG@10 | fit s |", "|---|---|---|---|"]
        for row in r["rows"]:
            v = row["hr"] if r["protocol"] == "loo" else row["recall"]
            md.append(f"| {row['name']} | {v:.4f} | {row['ndcg']:.4f} | {row['fit_seconds']:.2f} |")
        t = r["rows"][0].get("tuning") or {}
        if t:
            md += ["", f"Tuning: {t.get('fits')} fits in {t.get('seconds', 0):.1f}s on {t.get('validation')} "
                   f"({t.get('valid_users')} users), stopped by {t.get('stopped_by')}; validation NDCG@10 "
                   f"{t.get('given_ndcg10', 0):.4f} as given → {t.get('best_ndcg10', 0):.4f}."]
        md.append("")
    open(os.path.join(RESULTS, OUT + ".md"), "w").write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
