"""Test-wide settings: everything offline, deterministic, and small enough for 2 cores."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# tools/ holds scripts, not a package; tests import the generator from it.
sys.path.insert(0, str(Path(__file__).parent / "tools"))
