#!/usr/bin/env bash
# The evolutionary search of docs/evolve.md, run from a fixed commit and resumable.
#
#   benchmarks/run_search.sh COMMIT [--name search1] [--generations 5] [--population 8] [--workers 2]
#                            [--confirm 3] [--commit-every 15] [--no-commit] [-- more dreamteam evolve options]
#
# - checks out COMMIT into its own worktree, $DREAMTEAM_SEARCH_WORKTREES/dreamteam-search-<commit> (default
#   /tmp), once: code edited in the repository meanwhile does not leak into a running search;
# - runs `dreamteam evolve` there (PYTHONPATH = that worktree, OMP_NUM_THREADS=1: one torch thread per
#   evaluation, --workers evaluations at once), full protocol runs at seed 0, ranked by val_loss, generation 0
#   the five personas and crosses of them, then the best --confirm genomes at seeds 0, 1, 2;
# - writes into the repository's results/evolve/NAME/ (the run folder: evolve.json, generations.md, every
#   candidate's genome.json, metrics, run records; evolve.log) and commits that folder, and only it, every
#   --commit-every minutes and at the end (`git commit -- results/evolve/NAME`: what a developer has staged
#   elsewhere stays staged and out of these commits; a commit that fails, e.g. on a held index.lock, is
#   retried at the next one). The commits go onto the branch checked out in the repository.
#
# Started again with the same arguments it resumes: evaluated candidates are not rerun. The repository is
# the one this script lives in (override: DREAMTEAM_REPO); the data folder comes from DREAMTEAM_DATA or
# --data-dir after `--`. PYTHON names the interpreter (default: python).
set -euo pipefail

usage() { sed -n '4,5p' "$0" | sed 's/^# \{0,2\}//' >&2; exit 2; }
die() { echo "error: $*" >&2; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
COMMIT=$1; shift
NAME=search1 GENERATIONS=5 POPULATION=8 WORKERS=2 CONFIRM=3 COMMIT_EVERY=15 DO_COMMIT=1
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=${2:?}; shift 2 ;;
    --generations) GENERATIONS=${2:?}; shift 2 ;;
    --population) POPULATION=${2:?}; shift 2 ;;
    --workers) WORKERS=${2:?}; shift 2 ;;
    --confirm) CONFIRM=${2:?}; shift 2 ;;
    --commit-every) COMMIT_EVERY=${2:?}; shift 2 ;;
    --no-commit) DO_COMMIT=0; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option $1 (options after -- go to dreamteam evolve)" ;;
  esac
done
[[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "--name $NAME: expected letters, digits, . _ -"
[[ $COMMIT_EVERY =~ ^[0-9]+$ && $COMMIT_EVERY -ge 1 ]] || die "--commit-every $COMMIT_EVERY: expected whole minutes >= 1"

REPO=${DREAMTEAM_REPO:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}
FULL=$(git -C "$REPO" rev-parse --verify --quiet "$COMMIT^{commit}") || die "no commit $COMMIT in $REPO"
WT="${DREAMTEAM_SEARCH_WORKTREES:-/tmp}/dreamteam-search-$FULL"
if [ ! -d "$WT" ]; then
  git -C "$REPO" worktree add --detach "$WT" "$FULL" >/dev/null
fi
[ "$(git -C "$WT" rev-parse HEAD)" = "$FULL" ] || die "$WT is not at $FULL; remove it (git worktree remove) and start again"
[ -z "$(git -C "$WT" status --porcelain --untracked-files=no)" ] || die "$WT has local changes; the search runs from $FULL as committed"

REL="results/evolve/$NAME"
OUT="$REPO/$REL"
mkdir -p "$OUT"

commit_results() {  # $1: what the commit says
  [ "$DO_COMMIT" = 1 ] || return 0
  if git -C "$REPO" add -- "$REL" && ! git -C "$REPO" diff --cached --quiet -- "$REL"; then
    git -C "$REPO" commit -q -m "evolve $NAME at ${FULL:0:12}: $1" -- "$REL" \
      || echo "warning: could not commit $REL now; the next commit takes it" >&2
  fi
}

cd "$WT"
export PYTHONPATH="$WT" OMP_NUM_THREADS=1
"${PYTHON:-python}" -m dreamteam evolve --out "$OUT" --generations "$GENERATIONS" --population "$POPULATION" \
  --workers "$WORKERS" --seeds 0 --rank-by val_loss --no-baseline --confirm "$CONFIRM" --confirm-seeds 0 1 2 \
  --timeout 300 "${EXTRA[@]}" >>"$OUT/evolve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" || true; commit_results "interrupted"; exit 130' INT TERM
echo "search $NAME: dreamteam evolve (pid $pid) at $FULL in $WT; log $OUT/evolve.log"
waited=0
while kill -0 "$pid" 2>/dev/null; do
  sleep 5
  waited=$((waited + 5))
  if [ "$waited" -ge $((COMMIT_EVERY * 60)) ]; then
    commit_results "progress"
    waited=0
  fi
done
rc=0
wait "$pid" || rc=$?
commit_results "$([ $rc = 0 ] && echo finished || echo "stopped (exit $rc)")"
tail -n 5 "$OUT/evolve.log"
exit $rc
