#!/usr/bin/env bash
# Install each package alone, with only its upstream stages, into a fresh venv (torch preinstalled there),
# and import every module of it. Proves that a user can install only the stage they need.
# Usage: tools/check_isolated_install.sh [WORKDIR]   (takes a few minutes; not part of `make test`)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/isolated-install.XXXX)}
PYTHON=${PYTHON:-python3}
TORCH_SITE="$WORK/torch-site"
if [ ! -d "$TORCH_SITE/torch" ]; then
  "$PYTHON" -m pip install -q --target "$TORCH_SITE" -c "$ROOT/constraints.txt" torch torchvision
fi
declare -A UPSTREAM=(
  [contrastive_encoder]=""
  [flamingo_core]="contrastive_encoder"
  [fewshot_eval]="contrastive_encoder flamingo_core"
)
for pkg in contrastive_encoder flamingo_core fewshot_eval; do
  venv="$WORK/venv-$pkg"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$TORCH_SITE" > "$site/torch-preinstalled.pth"
  args=()
  for up in ${UPSTREAM[$pkg]}; do args+=("$ROOT/packages/$up"); done
  "$venv/bin/python" -m pip install -q -c "$ROOT/constraints.txt" "${args[@]}" "$ROOT/packages/$pkg"
  "$venv/bin/python" - "$pkg" <<'PY'
import importlib, importlib.util, pkgutil, sys
pkg = sys.argv[1]
order = ["contrastive_encoder", "flamingo_core", "fewshot_eval"]
for other in order[order.index(pkg) + 1:]:
    assert importlib.util.find_spec(other) is None, f"{other} should not be installed"
mod = importlib.import_module(pkg)
n = 0
for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
        n += 1
print(f"{pkg}: installed alone with its upstream stages, {n} modules import")
PY
done
