#!/usr/bin/env bash
# Re-run every built-in circuit method on every procedural task on the embedded models, then rebuild the
# tables. Records land in leaderboard/records/<task>/<model>/<run>/ (record.json, scores.json, plot).
# Usage: bash leaderboard/publish.sh [model ...]   (default: every embedded zoo model)
# Runs one job at a time on purpose: concurrent torch jobs on a small CPU distort every timing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
    mapfile -t models < <(python -c "from mibench.zoo.catalog import list_models; print('\n'.join(m.name for m in list_models()))")
fi
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
)
for model in "${models[@]}"; do
    for task in "${tasks[@]}"; do
        for run in "${runs[@]}"; do
            echo "== $model $task $run"
            # shellcheck disable=SC2086
            mibench evaluate $run --task "$task" --model "$model" --output-dir leaderboard/records --quiet \
                --format plain | tail -n 4
        done
    done
done
mibench leaderboard build
