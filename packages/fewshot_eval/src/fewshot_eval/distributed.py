"""Several evaluation processes (``accelerate launch`` / ``torchrun``): rank, world size, gathering, and claiming
the output folder on the main process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from contrastive_encoder.shared.outputs import OutputError, prepare_run_dir

__all__ = ["claim_output"]


class _Dist:
    """Process rank, world size and gathering; accelerate is used only under a multi-process launch."""

    def __init__(self):
        self.state = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            # accelerate only forms a CPU process group (gloo) when told it runs on CPU
            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, records: list) -> list:
        if self.world == 1:
            return records
        from accelerate.utils import gather_object

        return gather_object(records)

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def claim_output(out: str | Path, command: str, owned: Sequence[str], resume: bool = False,
                 overwrite: bool = False) -> Path:
    """Apply the suite's run-folder policy to ``out`` (``contrastive_encoder.shared.outputs.prepare_run_dir``) on the
    main process, every process stopping with the same ``OutputError`` when it refuses.

    A folder holding an evaluation from before ``run.json`` existed (``results.json`` or ``predictions/``) is
    taken as a previous run of ``command``.
    """
    dist = _Dist()
    problem = None
    if dist.is_main:
        try:
            prepare_run_dir(out, command, owned, resume=resume, overwrite=overwrite, flag="--out",
                            legacy=("results.json", "predictions/*.rank*.jsonl"))  # fmt: skip
        except OutputError as e:
            problem = str(e)
    problems = dist.gather([problem] if problem else [])  # also makes the others wait for the main process
    if problems:
        raise OutputError(problems[0])
    return Path(out)
