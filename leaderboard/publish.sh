#!/usr/bin/env bash
# Re-run every built-in method on every procedural task on the embedded models, then rebuild the tables.
# Records land in leaderboard/records/<task>/<model>/<run>/ (record.json plus the run's plot and files).
# Usage: bash leaderboard/publish.sh [--track circuit|causal|planted|all] [model ...]
#   (default: every track, every embedded zoo model; "planted" runs every circuit method on every
#   planted-circuit model, or on the planted models named, on the task whose circuit it ships, for the
#   known-circuits section)
# Runs one job at a time on purpose: concurrent torch jobs on a small CPU distort every timing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

track=all
if [[ "${1:-}" == "--track" ]]; then
    track="$2"
    shift 2
fi
case "$track" in circuit|causal|planted|all) ;; *) echo "publish.sh: --track circuit|causal|planted|all" >&2; exit 2 ;; esac
models=("$@")
chosen=("$@")  # with --track planted: only these planted models (default: every one)
if [[ ${#models[@]} -eq 0 ]]; then
    mapfile -t models < <(python -c "from mibench.zoo.catalog import list_models; print('\n'.join(m.name for m in list_models()))")
fi

# circuit track: every method x task
tasks=(ioi arithmetic_addition arithmetic_subtraction mcqa induction)
runs=(
    "--method random"
    "--method eap"
    "--method eap --ablation mean"
    "--method eap-ig-inputs"
    "--method eap-ig-activations"
    "--method exact"
    "--method ifr"
    "--method nap --level node"
    "--method nap-ig --level node"
    "--method nap --level neuron"
    "--method peap"
)
# causal track: every featurizer x (task, variable) the task cards declare (records and heatmaps only: the
# trained featurizers are tens of MB per model and are reproduced by re-running)
cells=(
    "ioi output_token" "ioi output_position"
    "arithmetic_addition ones_carry" "arithmetic_subtraction ones_carry"
    "mcqa answer_pointer" "mcqa answer"
)
featurizers=(full-vector das dbm pca dbm-pca sae dbm-sae)

circuit_runs() {  # every circuit run on one model and task
    local model="$1" task="$2" run
    for run in "${runs[@]}"; do
        echo "== $model $task $run"
        # shellcheck disable=SC2086
        mibench evaluate $run --task "$task" --model "$model" --output-dir leaderboard/records --quiet \
            --format plain | tail -n 4
    done
}

for model in "${models[@]}"; do
    [[ "$track" == planted ]] && break
    if [[ "$track" != causal ]]; then
        for task in "${tasks[@]}"; do
            circuit_runs "$model" "$task"
        done
    fi
    if [[ "$track" != circuit ]]; then
        for cell in "${cells[@]}"; do
            read -r task variable <<<"$cell"
            for method in "${featurizers[@]}"; do
                echo "== $model $task $variable $method"
                mibench evaluate --track causal --method "$method" --task "$task" --variable "$variable" \
                    --model "$model" --output-dir leaderboard/records --no-featurizers --quiet --format plain \
                    | grep -A 1 "^method" | tail -n 1
            done
        done
    fi
done
# known circuits: every circuit method on each planted model's own task (its ground truth's counterfactual is
# the default there, and the records carry AUROC)
if [[ "$track" == planted || "$track" == all ]]; then
    mapfile -t planted < <(python -c "import sys
from mibench.zoo.catalog import list_planted
for m in list_planted():
    if len(sys.argv) == 1 or m.name in sys.argv[1:]:
        for task in m.known_circuits: print(m.name, task)" "${chosen[@]}")
    for entry in "${planted[@]}"; do
        read -r model task <<<"$entry"
        circuit_runs "$model" "$task"
    done
fi
mibench leaderboard build
