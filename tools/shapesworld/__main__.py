"""``python tools/shapesworld --out data/world`` (or ``python -m shapesworld`` with tools/ on the path)."""

import sys
from pathlib import Path

if not __package__:
    # run as a folder: Python put this folder on sys.path, where scene.py, cli.py, ... would shadow other
    # modules of those names; the package is imported from tools/ instead
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from shapesworld.cli import main  # noqa: E402

sys.exit(main())
