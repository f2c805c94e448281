"""Test-wide settings: everything offline, deterministic, and small enough for 2 cores."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# tools/ holds scripts, not a package; tests import the generator and the pipeline from it. Test folders hold
# helper modules (uniquely named: fc_helpers, fewshot_helpers, ...) that their tests import; pytest runs in
# importlib mode because test files repeat basenames across packages (test_data.py, test_train.py).
_ROOT = Path(__file__).parent
for _folder in ["tools", *sorted(str(p.relative_to(_ROOT)) for p in (_ROOT / "tests").iterdir() if p.is_dir())]:
    sys.path.insert(0, str(_ROOT / _folder))
