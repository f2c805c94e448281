"""``flamingo train`` whose processes die during the second sharded checkpoint save (fsdp_runs.py, run "two").

Each process writes part of a shard file into the checkpoint's temporary folder, then exits at once (no cleanup,
as after a kill), before the folder is renamed into place.
"""

import os
import sys
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from flamingo_core.train import main

_real_save = dcp.save
_calls = [0]


def _save_then_die(state_dict, *args, checkpoint_id=None, **kwargs):
    _calls[0] += 1
    if _calls[0] < 2:
        return _real_save(state_dict, *args, checkpoint_id=checkpoint_id, **kwargs)
    folder = Path(checkpoint_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"__{dist.get_rank()}_0.distcp").write_bytes(b"partial shard")
    os._exit(9)


dcp.save = _save_then_die
sys.exit(main(sys.argv[1:]))
