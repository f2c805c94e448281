#!/usr/bin/env bash
# Install OpenFlamingo 2.0.1, the peer of the benchmarks and of tests/flamingo_core/test_openflamingo.py, into
# benchmarks/.peer-site (never into the packages' environment): --no-deps, plus the few modules its package import
# needs. Idempotent: `make test` runs it before pytest. PEER_SITE=DIR installs elsewhere (to time a fresh install).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SITE="${PEER_SITE:-$ROOT/benchmarks/.peer-site}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
if [ -d "$SITE/open_flamingo" ]; then echo "OpenFlamingo already in $SITE"; exit 0; fi
"$PY" -m pip install -q --no-deps --target "$SITE" open-flamingo==2.0.1 einops==0.8.2 einops-exts==0.0.4 \
    ftfy==6.3.1 wcwidth open-clip-torch==3.3.0
echo "OpenFlamingo installed in $SITE"
