#!/usr/bin/env bash
# Quality benchmark: affinity (defaults and tuned), Pop, ItemKNN, EASE and Python
# `implicit` ALS (pinned 0.7.3, in a virtualenv this script creates) on the same split
# files, for every data set in ../shared/datasets. Results: benches/results/quality.{md,json}.
#
#   bash benches/quality/run.sh [TRIALS] [SEEDS]   # default 8 candidates per system, 5 seeds
#
# Every system is tuned once, on the validation part of the seed-42 split, with the same
# number of candidates; the chosen parameters are then fit on train + validation and scored
# on test for seeds 42 .. 42+SEEDS-1 (random splits; leave-one-out has no randomness, so
# Amazon Beauty runs seed 42 only). Needs python3 with venv; downloads implicit from PyPI
# on first run. Takes ~15 minutes on 2 cores (EASE on LastFM's 17.6k items dominates).
set -euo pipefail
cd "$(dirname "$0")/../.."
TRIALS="${1:-8}"
SEEDS="${2:-5}"
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
PY="$VENV/bin/python"

run() { # name source input protocol seeds
  local name=$1 source=$2 input=$3 protocol=$4 seeds=$5 dir="$WORK/$1"
  echo "== $name ($protocol)"
  rm -rf "$dir"
  $T import "$source" --input "$input" --out "$dir/data" > /dev/null
  $T split --events "$dir/data/events.csv" --protocol "$protocol" --seed 42 --out "$dir/split-42"
  # Tuning, on seed 42's validation part only.
  $T tune --split "$dir/split-42" --trials "$TRIALS" --out "$dir/params.json" \
    --baselines-out "$dir/baselines.json" --json "$dir/trials.json"
  "$PY" benches/quality/implicit_eval.py --split "$dir/split-42" --trials "$TRIALS" --json "$dir/implicit-tuning.json"
  for seed in $(seq 42 $((42 + seeds - 1))); do
    local split="$dir/split-$seed"
    [ -d "$split" ] || $T split --events "$dir/data/events.csv" --protocol "$protocol" --seed "$seed" --out "$split"
    $T evaluate --split "$split" --dataset "$name" --baseline-params "$dir/baselines.json" \
      --json "$dir/default-$seed.json" > /dev/null
    $T evaluate --split "$split" --dataset "$name" --baselines pop --params "$dir/params.json" \
      --json "$dir/tuned-$seed.json" > /dev/null
    "$PY" benches/quality/implicit_eval.py --split "$split" --params "$dir/implicit-tuning.json" \
      --json "$dir/implicit-$seed.json"
    "$PY" - "$dir" "$seed" <<'PY'
import json, sys
d, seed = sys.argv[1], sys.argv[2]
r = json.load(open(f"{d}/default-{seed}.json"))
tuned = [m for m in json.load(open(f"{d}/tuned-{seed}.json"))["models"] if m["name"] == "affinity"][0]
tuned["name"] = "affinity (tuned on valid)"
imp = json.load(open(f"{d}/implicit-{seed}.json"))
imp.pop("trials", None)
r["models"] += [tuned, imp]
json.dump(r, open(f"{d}/combined-{seed}.json", "w"), indent=2)
PY
  done
}

run movielens-100k movielens "$DATA/movielens-100k" random "$SEEDS"
run lastfm-hetrec lastfm "$DATA/lastfm-hetrec" random "$SEEDS"
run filmtrust filmtrust "$DATA/filmtrust" random "$SEEDS"
run amazon-beauty sequence "$DATA/amazon-beauty/Beauty.txt" loo 1
"$PY" benches/quality/report.py "$RESULTS" "$WORK"/*/combined-*.json
