#!/usr/bin/env bash
# mypy --strict over the typed public modules of the package (network, reference,
# distributed, gradcheck, the package and the modules they are built on), from the source
# tree; the compiled module is typed by src/cbackprop/_core.pyi.  Needs mypy in the active
# environment (pip install mypy).  Its cache goes to a temporary directory (removed).
# Exit status: mypy's (0: no issues).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=$(mktemp -d "${TMPDIR:-/tmp}/cbp-mypy.XXXXXX")
trap 'rm -rf "$CACHE"' EXIT
python -m mypy --strict --cache-dir "$CACHE" --follow-imports=silent --untyped-calls-exclude=cbackprop._io src/cbackprop/__init__.py src/cbackprop/network.py src/cbackprop/reference.py src/cbackprop/distributed.py src/cbackprop/gradcheck.py src/cbackprop/_base.py src/cbackprop/_training.py src/cbackprop/_validation.py src/cbackprop/_model.py src/cbackprop/_nonfinite.py src/cbackprop/_collectives.py src/cbackprop/_dropout.py
