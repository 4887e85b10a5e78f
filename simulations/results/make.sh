#!/usr/bin/env bash
# Regenerate every committed result. Run from the repository root. Each simulation is one
# process, fully determined by its seed. SIZES defaults to "100 1000"; at 10000 only `steady`
# and `crash` run (about 6 minutes and 4 GB each). ONLY="steady crash ..." limits the run to
# those result names without the size (e.g. ONLY="partition-half churn"), so two shells can
# split the work across two cores.
# Since 2026-11-26 every scenario starts warm (converged membership, no join storm); results
# made before that were cold-started: add --cold-start to replay them.
set -euo pipefail
out=simulations/results
for n in ${SIZES:-100 1000}; do
  rates="0,0.05,0.1,0.2,0.3"
  [ "$n" -ge 1000 ] && rates="0,0.1,0.3"
  specs=("steady" "crash --kill 3" "loss --loss-rates $rates --duration 40"
         "slow-nodes --slow-delay-ms 5000" "partition --split half"
         "partition --split one" "churn --churn-rate 1"
         "config-spread" "partition-edit")
  [ "$n" -ge 10000 ] && specs=("steady --duration 60" "crash --kill 3")
  for spec in "${specs[@]}"; do
    set -- $spec
    base="$1"
    [ "$1" = partition ] && base="partition-$3"
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $base "* ]]; then
      continue
    fi
    name="$base-$n"
    python -m simulations $spec --nodes "$n" --seed 1 --quiet \
      --json "$out/$name.json" --plot "$out/$name.png" --markdown "$out/$name.md" \
      > "$out/$name.txt" || echo "$name: checks failed (see $name.md)"
  done
done
