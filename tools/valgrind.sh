#!/usr/bin/env bash
# valgrind memcheck on a short training run of a normal (not instrumented) build.
# See tools/README.md.
#
#   tools/valgrind.sh [--keep] [--full] [--kernels all|best|NAME[,NAME...]]
#
#   --keep      keep the work directory (venv, build tree, valgrind logs); kept on failure
#   --kernels   kernel variants to run (default: all that the CPU valgrind emulates supports;
#               valgrind has no AVX-512, so the avx512 variant is never among them)
#   --full      the larger smoke run ([64, 33, 17, 10], 200 samples, two epochs)
#
# The run: tools/smoke_train.py --quick (network [37, 21, 10], 40 samples, mini-batches of 10;
# feedforward, backprop, update_mini_batch, one epoch of sgd with 1 and 2 threads, evaluate;
# float64 and float32; each checked against the NumPy reference).
# Exit status: 0 when no invalid read/write/free and no memcheck error through cbackprop's
# C code (CPython's own uninitialised-value errors are listed, not fatal); 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
KEEP=0 KERNELS=all QUICK=--quick
while [ $# -gt 0 ]; do
  case $1 in
    --keep) KEEP=1 ;;
    --kernels) KERNELS=$2; shift ;;
    --full) QUICK= ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cbp-valgrind.XXXXXX")
T0=$(date +%s)
ok=0
trap 'if [ $ok = 1 ] && [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "== work directory kept: $WORK"; fi' EXIT
step() { echo; echo "== [$(( $(date +%s) - T0 )) s] $*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

step "venv with a normal build (Release, -g for file:line, not stripped)"
"$PY" -m venv "$WORK/venv"
CFLAGS="-g" "$WORK/venv/bin/pip" install --disable-pip-version-check -v "$ROOT" \
  -Cbuild-dir="$WORK/build" -Cinstall.strip=false > "$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log"; die "build"; }
"$WORK/venv/bin/python" -c "import cbackprop._core as c; print('installed:', c.__file__)"

# Suppressions: tools/valgrind-python.supp (false positives of ld.so and CPython 3.11 seen here)
# plus CPython's: Debian's (valgrind package) if present, else Misc/valgrind-python.supp of the
# interpreter's source tree when it has one.
SUPP=(--suppressions="$ROOT/tools/valgrind-python.supp")
for f in /usr/lib/valgrind/python3.supp \
         "$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("srcdir") or "")')/Misc/valgrind-python.supp"; do
  if [ -f "$f" ]; then SUPP+=(--suppressions="$f"); break; fi
done
echo "suppressions: ${SUPP[*]:-none}"

# PYTHONMALLOC=malloc: no pymalloc arenas, so memcheck sees every Python object as its own
# heap block (and the pymalloc false positives are gone).  One OpenBLAS thread: less noise.
export PYTHONMALLOC=malloc OPENBLAS_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
# --error-exitcode=99, not 1: told apart from a failing smoke run (exit 1).
VG=(valgrind --tool=memcheck --error-exitcode=99 --errors-for-leak-kinds=none --num-callers=40
    "${SUPP[@]}" --log-file="$WORK/memcheck.%p.log")
echo "${VG[*]}"

step "memcheck: tools/smoke_train.py $QUICK --kernels $KERNELS"
TM=$(date +%s)
set +e
"${VG[@]}" "$WORK/venv/bin/python" "$ROOT/tools/smoke_train.py" $QUICK --kernels "$KERNELS" |
  tee "$WORK/smoke.log"
rc=${PIPESTATUS[0]}
set -e
T1=$(date +%s)

step "memcheck summary (exit status $rc)"
for log in "$WORK"/memcheck.*.log; do
  echo "--- $(basename "$log"): $(grep -h 'ERROR SUMMARY' "$log" | sed 's/^==[0-9]*== //')"
done
# Verdict: no invalid read/write/free anywhere, and no error of any kind whose stack passes
# through cbackprop's C code.  Other errors (CPython's own uninitialised values) are listed.
set +e
"$PY" - "$WORK" <<'PYEOF'
import glob, re, sys
from collections import Counter
kinds, ours, blocks, suppressed = Counter(), Counter(), [], 0
for path in glob.glob(f"{sys.argv[1]}/memcheck.*.log"):
    text = open(path, errors="replace").read()
    m = re.search(r"ERROR SUMMARY: .*\(suppressed: (\d+)", text)
    suppressed += int(m.group(1)) if m else 0
    # one error = a header line and its stack, up to the next blank line
    for block in re.split(r"\n==\d+== \n", text):
        lines = [re.sub(r"^==\d+== ?", "", l) for l in block.splitlines()]
        head = next((l for l in lines if re.match(
            r"(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
            r"Mismatched free|Source and destination overlap|Argument .* of function)", l)), None)
        if not head:
            continue
        kind = re.sub(r" of size \d+", "", head)
        kinds[kind] += 1
        if any(re.search(r"cbp_|_core\.c|cbackprop/_core|csrc/", l)
               for l in lines):
            ours[kind] += 1
            blocks.append("\n".join(lines[:30]))
invalid = sum(n for k, n in kinds.items() if k.startswith(("Invalid", "Mismatched")))
print(f"error contexts by kind, all code: {dict(kinds) or 'none'} (suppressed errors: {suppressed})")
print(f"error contexts through cbackprop's C code: {dict(ours) or 'none'}")
print(f"invalid reads/writes/frees: {invalid}")
for b in blocks[:5]:
    print("----\n" + b)
sys.exit(1 if invalid or ours else 0)
PYEOF
verdict=$?
set -e
echo "the run under memcheck took $((T1 - TM)) s"
[ "$verdict" = 0 ] || die "memcheck errors in cbackprop or invalid accesses (logs in $WORK)"
grep -q '^smoke OK' "$WORK/smoke.log" || die "the smoke run failed under valgrind (exit $rc; logs in $WORK)"
[ "$rc" = 0 ] || echo "note: valgrind exit $rc: memcheck errors outside cbackprop only (listed above)"
ok=1
step "clean: no memcheck error (wall time $(( $(date +%s) - T0 )) s)"
