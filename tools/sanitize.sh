#!/usr/bin/env bash
# Build the extension (C kernels and Cython module) with AddressSanitizer and
# UndefinedBehaviorSanitizer into a separate venv and run the whole test suite under them.
# See tools/README.md.
#
#   tools/sanitize.sh [--keep] [--no-variants] [PYTEST ARGS...]
#
#   --keep         keep the work directory (venv, CMake build tree, logs); kept on failure
#   --no-variants  skip the second pass (test_crosscheck.py, test_reference.py once per other
#                  kernel variant, as .ci/run does)
#   PYTEST ARGS    replace the default selection (the whole suite), e.g. tests/crosscheck/test_kernels.py
#
# Exit status: 0 clean; 1 a sanitizer report (or a crash); 3 no report but failing tests.
#
# gcc only (CC defaults to gcc).  The flags go in through CFLAGS/LDFLAGS, which CMake puts on
# every target (cbp_kernels and the _core module); no change to CMakeLists.txt is needed.
# Python is not instrumented: libasan is LD_PRELOADed, leak detection is off.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
export CC=${CC:-gcc}
KEEP=0 VARIANTS=1
while [ $# -gt 0 ]; do
  case $1 in
    --keep) KEEP=1 ;;
    --no-variants) VARIANTS=0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) break ;;
  esac
  shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cbp-sanitize.XXXXXX")
T0=$(date +%s)
ok=0
trap 'if [ $ok = 1 ] && [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "== work directory kept: $WORK"; fi' EXIT
step() { echo; echo "== [$(( $(date +%s) - T0 )) s] $*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

LIBASAN=$("$CC" -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || die "$CC has no libasan.so (Debian: apt-get install libasan8 / gcc)"
LIBASAN=$(readlink -f "$LIBASAN")
echo "compiler: $($CC --version | head -1); runtime: $LIBASAN"

# -O1 would give the most exact reports; the kernels keep their own -O3 from CMakeLists.txt
# (the code that ships), RelWithDebInfo adds -g for file:line in reports.
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

step "venv with the sanitized build"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --disable-pip-version-check pytest hypothesis
CFLAGS="$SAN -g" LDFLAGS="-fsanitize=address,undefined" \
  "$WORK/venv/bin/pip" install --disable-pip-version-check -v "$ROOT" \
    -Cbuild-dir="$WORK/build" -Ccmake.build-type=RelWithDebInfo -Cinstall.strip=false \
    -Cbuild.verbose=true > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; die "sanitized build"; }

# Every translation unit must be instrumented (ASan and UBSan calls in their objects).
for obj in kernels_plain.c.o kernels_simd.c.o net.c.o parallel.c.o dispatch.c.o _core.c.o; do
  f=$(find "$WORK/build" -name "$obj" | head -1)
  [ -n "$f" ] || die "object $obj not found in $WORK/build"
  asan=$(nm "$f" | grep -c ' U __asan_' || true)
  ubsan=$(nm "$f" | grep -c ' U __ubsan_' || true)
  echo "$obj: $asan __asan_* and $ubsan __ubsan_* references"
  [ "$asan" -gt 0 ] && [ "$ubsan" -gt 0 ] || die "$obj is not instrumented"
done
SO=$(find "$WORK/venv" -name '_core*.so')
echo "installed: $SO"
ldd "$SO" | grep -E 'asan|ubsan' || true

# detect_leaks=0: CPython is not instrumented and keeps its allocations to the end.
# allocator_may_return_null=1: a deliberately huge allocation (tests of MemoryError) gets
#   NULL as from glibc, instead of ASan aborting the process.
# PYTHONMALLOC=malloc: Python objects are malloc'd too, so ASan sees every heap block.
export LD_PRELOAD=$LIBASAN
# exitcode=86: a sanitizer stop is told apart from pytest's own exit statuses (0..5).
# ASan's log_path: its reports go to files, one per process (the CLI tests' subprocesses
#   included); on stderr they would land in pytest's capture and die unprinted with the process.
#   gcc 12's libubsan ignores log_path next to ASan, so pytest runs with --capture=sys: the
#   C-level stderr (UBSan's "runtime error:" reports) goes straight to the log.
mkdir -p "$WORK/reports"
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:exitcode=86:log_path=$WORK/reports/asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=86
export PYTHONMALLOC=malloc PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$ROOT/tools
PYTEST=("$WORK/venv/bin/python" -m pytest -p no:cacheprovider -p pytest_slow_profile --capture=sys)
cd "$ROOT"   # the src layout: the repository root on sys.path does not shadow the venv's cbackprop
"$WORK/venv/bin/python" -c "import cbackprop._core as c; print('kernels:', c.kernels_supported(), 'best:', c.best_kernels())"

reports_total=0 failed_runs=()
run() {  # run LABEL pytest-args...
  local label=$1; shift
  local log=$WORK/pytest-$label.log
  rm -f "$WORK"/reports/*
  set +e
  "${PYTEST[@]}" "$@" > "$log" 2>&1
  local rc=$?
  set -e
  tail -1 "$log"
  local files ub
  # a file holding only warnings (allocator_may_return_null's "failed to allocate") is no report
  files=$({ grep -l -E 'ERROR: |runtime error:' "$WORK"/reports/* 2>/dev/null || true; } | wc -l)
  local warnings
  warnings=$(cat "$WORK"/reports/* 2>/dev/null | grep -c WARNING || true)
  [ "$warnings" = 0 ] || echo "($warnings sanitizer warning(s): $(cat "$WORK"/reports/* | grep WARNING | sort | uniq -c | head -3))"
  ub=$(grep -c 'runtime error:' "$log" || true)
  if [ "$files" != 0 ] || [ "$ub" != 0 ] || [ "$rc" -gt 5 ]; then
    grep -B2 -A25 'runtime error:' "$log" | head -60 || true
    mkdir -p "$WORK/reports-$label"
    cp "$WORK"/reports/* "$WORK/reports-$label"/ 2>/dev/null || true
    for f in "$WORK/reports-$label"/*; do
      [ -f "$f" ] || continue
      echo "--- $f"
      head -25 "$f"
    done
    echo "SANITIZER: $label: pytest exit $rc, $files ASan report file(s), $ub UBSan report(s) (pytest log: $log)"
    reports_total=$((reports_total + 1))
  elif [ "$rc" != 0 ]; then
    grep -E '^(FAILED|ERROR) ' "$log" || true
    echo "TEST FAILURES without any sanitizer report: $label (log: $log)"
    failed_runs+=("$label")
  fi
}

step "whole test suite under ASan+UBSan (kernels: ${CBACKPROP_KERNELS:-best})"
run suite "$@"

if [ $VARIANTS = 1 ] && [ $# = 0 ]; then
  for k in $("$WORK/venv/bin/python" -c "from cbackprop import _core as c; print(*[k for k in c.kernels_supported() if k != c.best_kernels()])"); do
    step "kernels $k: tests/crosscheck/test_crosscheck.py tests/crosscheck/test_reference.py"
    CBACKPROP_KERNELS=$k run "$k" tests/crosscheck/test_crosscheck.py tests/crosscheck/test_reference.py
  done
fi

if [ $reports_total != 0 ]; then
  step "FAIL: sanitizer reports in $reports_total run(s) (wall time $(( $(date +%s) - T0 )) s)"
  exit 1
fi
if [ ${#failed_runs[@]} != 0 ]; then
  # The instrumented build compiles differently (e.g. a `#pragma omp simd reduction` loop of
  # the plain kernels stays scalar), so results can differ by rounding from a normal build:
  # reported apart from memory/UB errors, with their own exit status.
  step "no sanitizer report, but test failures in: ${failed_runs[*]} (wall time $(( $(date +%s) - T0 )) s)"
  KEEP=1
  exit 3
fi
ok=1
step "clean: no sanitizer report, every test passed (wall time $(( $(date +%s) - T0 )) s)"
