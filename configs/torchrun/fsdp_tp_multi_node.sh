#!/usr/bin/env bash
# flamingo train on NODES nodes x GPUS GPUs: FSDP2 over the data-parallel replicas, tensor parallelism of TP GPUs
# within each (a (NODES*GPUS/TP) x TP mesh; keep TP within a node, where the all-reduces of every layer are cheap).
# Run the same command on every node, NODE_RANK 0..NODES-1, MASTER_ADDR the address of node 0:
#   NODES=4 GPUS=8 TP=8 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash configs/torchrun/fsdp_tp_multi_node.sh --data /data/mix ...
# Size the run first: python tools/plan_cluster.py --gpus $GPUS --nodes $NODES (docs/scaling.md).
set -euo pipefail
NODES=${NODES:-1} GPUS=${GPUS:-8} TP=${TP:-1} NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=${MASTER_PORT:-29500}
extra=()
if [ "$TP" -gt 1 ]; then extra+=(--tensor-parallel "$TP"); fi
exec torchrun --nnodes "$NODES" --nproc_per_node "$GPUS" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    -m flamingo_core.train --fsdp "${extra[@]}" --frozen-dtype bfloat16 --precision bf16 "$@"
