#!/usr/bin/env bash
# ThreadSanitizer over the threaded sgd epochs of the C engine (tools/tsan_epochs.c): 2, 3
# and 5 threads, both element types, every update rule, target rows and labels, each way of
# running an epoch (the feeder, the hidden split, phases of tasks), and an epoch stopped by
# its poll, each checked bitwise against one thread; and the round-trip probe of the
# automatic policy.  See tools/README.md.
#
#   tools/tsan.sh [--keep]
#
# Exit status: 0 clean; 66 a ThreadSanitizer report; 1 a differing result or a build failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cbp-tsan.XXXXXX")
ok=0
trap 'if [ $ok = 1 ] && [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "== work directory kept: $WORK"; fi' EXIT
CC=${CC:-gcc}
echo "== building with -fsanitize=thread ($CC)"
"$CC" -O1 -g -fsanitize=thread -pthread -I"$ROOT/csrc" "$ROOT/tools/tsan_epochs.c" \
      "$ROOT"/csrc/*.c -o "$WORK/tsan_epochs" -lm
echo "== running"
TSAN_OPTIONS="halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}" "$WORK/tsan_epochs"
ok=1
echo "== no ThreadSanitizer report"
