"""``python -m flamingo_core.train`` (what torchrun and ``accelerate launch -m`` run): ``flamingo train``."""

import sys

from flamingo_core.train.cli import main

sys.exit(main())
