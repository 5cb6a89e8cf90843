#!/usr/bin/env bash
# Interleaved rounds of bench/overhead.py for an older commit and the working tree, on one
# machine in one hour (timings from different hours do not compare on 2 shared cores).
#   bench/compare_commits.sh <commit> [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
commit=${1:?usage: bench/compare_commits.sh <commit> [rounds]}
rounds=${2:-3}
old=$(mktemp -d)/gateway-$commit
git worktree add --detach --quiet "$old" "$commit"
trap 'git worktree remove --force "$old"' EXIT
for round in $(seq "$rounds"); do
  for tree in "$old" "$PWD"; do
    echo "== $tree round $round"
    # PYTHONPATH makes Ray's workers import that tree's packages, not the editable install.
    (cd "$tree" && PYTHONPATH="$tree" "$OLDPWD/.venv/bin/python" bench/overhead.py --requests 300)
  done
done
