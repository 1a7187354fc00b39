#!/usr/bin/env bash
# Quality benchmark: affinity (defaults and tuned), Pop, ItemKNN, EASE and Python
# `implicit` ALS (pinned 0.7.3, in a virtualenv this script creates) on the same split
# files, for every data set in ../shared/datasets. Results: benches/results/quality.{md,json}.
#
#   bash benches/quality/run.sh [TRIALS]      # default 8 candidates per system
#
# Needs python3 with venv; downloads implicit from PyPI on first run. Takes ~20 minutes
# on 2 cores (EASE on LastFM's 17.6k items dominates).
set -euo pipefail
cd "$(dirname "$0")/../.."
TRIALS="${1:-8}"
DATA=../shared/datasets
WORK=benches/.work
RESULTS=benches/results
VENV=benches/.venv
mkdir -p "$WORK" "$RESULTS"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "implicit==0.7.3" threadpoolctl
fi
cargo build --release --quiet --bin affinity-trainer
T=target/release/affinity-trainer

run() { # name source input protocol
  local name=$1 source=$2 input=$3 protocol=$4 dir="$WORK/$1"
  echo "== $name ($protocol)"
  $T import "$source" --input "$input" --out "$dir/data" > /dev/null
  $T split --events "$dir/data/events.csv" --protocol "$protocol" --seed 42 --out "$dir/split"
  $T tune --split "$dir/split" --trials "$TRIALS" --out "$dir/params.json" \
    --baselines-out "$dir/baselines.json" --json "$dir/trials.json"
  $T evaluate --split "$dir/split" --dataset "$name" --baseline-params "$dir/baselines.json" \
    --json "$dir/default.json" > /dev/null
  $T evaluate --split "$dir/split" --dataset "$name" --baselines pop --params "$dir/params.json" \
    --json "$dir/tuned.json" > /dev/null
  "$VENV/bin/python" benches/quality/implicit_eval.py --split "$dir/split" --trials "$TRIALS" --json "$dir/implicit.json"
  "$VENV/bin/python" - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
r = json.load(open(f"{d}/default.json"))
tuned = [m for m in json.load(open(f"{d}/tuned.json"))["models"] if m["name"] == "affinity"][0]
tuned["name"] = "affinity (tuned on valid)"
imp = json.load(open(f"{d}/implicit.json"))
imp.pop("trials", None)
r["models"] += [tuned, imp]
json.dump(r, open(f"{d}/combined.json", "w"), indent=2)
PY
}

run movielens-100k movielens "$DATA/movielens-100k" random
run lastfm-hetrec lastfm "$DATA/lastfm-hetrec" random
run filmtrust filmtrust "$DATA/filmtrust" random
run amazon-beauty sequence "$DATA/amazon-beauty/Beauty.txt" loo
"$VENV/bin/python" benches/quality/report.py "$RESULTS" "$WORK"/*/combined.json
