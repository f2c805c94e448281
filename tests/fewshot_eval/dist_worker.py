"""Worker for test_distributed: one process of a `torchrun --nproc_per_node N` evaluation with the fake model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fewshot_helpers import FakeModel  # noqa: E402

from fewshot_eval.evaluate import evaluate  # noqa: E402

if __name__ == "__main__":
    data, out = sys.argv[1], sys.argv[2]
    evaluate(FakeModel(), "caption", data, shots=[0, 2], selection=["random", "rices"], trials=2, batch_size=2,
             out_dir=out, progress=False)  # fmt: skip
