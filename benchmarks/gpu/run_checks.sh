#!/usr/bin/env bash
# The GPU checks, as one script for a lent machine (python3 with torch, transformers, accelerate, timm; no
# registry, none of the packaged models): stand-in models, a small ShapesWorld, the side-by-side benchmark on
# the GPU (batch 4 x 64 with generation; 32 x 256 training in fp32 and in bf16), stage 1 in bf16, stage 2 in
# bf16 with a resume, the paper's mixture against OpenFlamingo's recipe (bf16, MFU), stage 2 under accelerate's FSDP and under torch's FSDP2 (one process, bf16) with resumes,
# and generation from the saved model.
# About 7 minutes on an H100 (2026-11-27: 5.5 minutes before the two 32 x 256 benchmarks were added).
#
#   bash benchmarks/gpu/run_checks.sh OUT CONFIG_DIR [DEVICE]
#
# OUT: where the logs, the summary and the benchmarks' JSON go (8 files). CONFIG_DIR: the LM's config.json and
# tokenizer files, e.g. the converted SmolLM2 cache without its weights:
#   mkdir -p .devcarry/smollm2-config && echo /.devcarry/ >> .git/info/exclude
#   cp ~/.cache/flamingo-suite/smollm2-135m-*/{config.json,tokenizer.json,tokenizer_config.json} .devcarry/smollm2-config/
# then, on the lent machine, carrying .devcarry and benchmarks/.peer-site (bash benchmarks/peers/install_openflamingo.sh):
#   bash benchmarks/gpu/run_checks.sh $OUT .devcarry/smollm2-config
# DEVICE: cuda (default), or cpu for a dry run here (fp32, a step or two each, no FSDP).
# CHECKS="env stand-ins ..." runs only the named checks; BENCH_ARGS adds options to the first benchmark.
set -u
OUT=$(realpath "${1:?OUT}"); CFG=$(realpath "${2:?CONFIG_DIR}"); DEV=${3:-cuda}
W=${GPU_CHECKS_WORK:-/tmp/gpu-checks}; [ -n "${GPU_CHECKS_KEEP:-}" ] || rm -rf "$W"; mkdir -p "$W" "$OUT"  # KEEP: reuse W
ROOT=$(cd "$(dirname "$0")/../.." && pwd); cd "$ROOT"
export PYTHONPATH=$ROOT/packages/contrastive_encoder/src:$ROOT/packages/flamingo_core/src:$ROOT/packages/fewshot_eval/src
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 FLAMINGO_SUITE_CACHE=$W/cache
PY=${PYTHON:-python3}
if [ "$DEV" = cpu ]; then S1=4; S2=3; BENCH="--steps 1 --gen-rounds 1"; CPU=--cpu; PREC=fp32
else S1=60; S2=30; BENCH="--steps 16 --gen-rounds 5"; CPU=; PREC=bf16; fi
LOG=$OUT/checks.log; : > "$LOG"
CHECKS=${CHECKS:-all}  # or a list of the names below: only those run
check() {  # name, time limit in s, command...
    local name=$1 limit=$2; shift 2; local t0=$SECONDS
    case " $CHECKS " in *" all "*|*" $name "*) ;; *) return 0 ;; esac
    echo "=== $name: $*" >> "$LOG"
    timeout "$limit" "$@" >> "$LOG" 2>&1; local rc=$?
    echo "=== $name rc=$rc $((SECONDS - t0)) s" | tee -a "$LOG"
    return $rc
}
check env 60 bash -c "nvidia-smi -L; $PY -c 'import sys, torch, transformers, accelerate, timm; print(sys.version.split()[0], torch.__version__, torch.version.cuda, transformers.__version__, accelerate.__version__, timm.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())'"
check stand-ins 120 bash -c "$PY benchmarks/gpu/stand_ins.py lm --config-from $CFG --out $W/lm && $PY benchmarks/gpu/stand_ins.py vision --out $W/vis"
check world 120 $PY tools/shapesworld --out "$W/world" --counts small --count ltip_train=512 --count m3w_train=128 --quiet --video-format frames
check bench-vs-openflamingo 240 $PY benchmarks/bench_vs_openflamingo.py --device "$DEV" --lm "$W/lm" --vision "$W/vis" \
    $BENCH ${BENCH_ARGS:-} --json "$OUT/bench.json" --log "$OUT/bench-workers.log"
if [ "$DEV" = cuda ]; then  # a batch that fills the GPU, in fp32 and in bf16 autocast (training only)
    for prec in fp32 bf16; do
        check bench-32x256-$prec 180 $PY benchmarks/bench_vs_openflamingo.py --device "$DEV" --lm "$W/lm" --vision "$W/vis" \
            --batch 32 --seq 256 --steps 12 --precision $prec --only lm-train of-train ours-train \
            --json "$OUT/bench-32x256-$prec.json" --log "$OUT/bench-32x256-$prec.log"
    done
    # the paper's mixture, packed (ours) against OpenFlamingo's per-dataset padded passes, bf16, with MFU
    check bench-mixture-bf16 240 $PY benchmarks/bench_mixture_vs_openflamingo.py --device "$DEV" --lm "$W/lm" \
        --vision "$W/vis" --batch m3w=16,ltip=64,align=64 --steps 8 --precision bf16 \
        --json "$OUT/bench-mixture-bf16.json" --log "$OUT/bench-mixture-bf16.log"
fi
check stage1 90 $PY -m contrastive_encoder.cli train --model "$W/vis/preset.json" --data "$W/world/ltip/train.jsonl" \
    --max-steps $S1 --batch-size 64 --precision $PREC --out "$W/s1" --export "$W/s1vis" --eval-every 0 --no-progress $CPU \
    || rm -rf "$W/s1vis"
[ -d "$W/s1vis" ] || cp -r "$W/vis" "$W/s1vis"  # stage 2 without a trained tower when stage 1 failed or was skipped
TRAIN=(-m flamingo_core.train --data "$W/world" --lm "$W/lm" --vision-encoder "$W/s1vis" --precision $PREC
       --batch-size 4 --eval-samples 16 --num-captions 2 --no-progress $CPU)
check stage2 150 $PY "${TRAIN[@]}" --out "$W/s2" --max-steps $S2 --save-every 10 --eval-every $S2
check stage2-resume 90 $PY "${TRAIN[@]}" --out "$W/s2" --max-steps $((S2 + 10)) --save-every 10 --resume latest --no-eval
if [ "$DEV" = cuda ]; then
    FSDP=(accelerate launch --config_file configs/accelerate/fsdp_multi_gpu.yaml --num_processes 1)
    check stage2-fsdp 150 "${FSDP[@]}" "${TRAIN[@]}" --out "$W/fsdp" --max-steps 20 --save-every 10 --no-eval
    check stage2-fsdp-resume 90 "${FSDP[@]}" "${TRAIN[@]}" --out "$W/fsdp" --max-steps 25 --save-every 5 --resume latest \
        --eval-every 5
    # torch's FSDP2 (--fsdp) with bf16 compute and bf16 frozen parts, its sharded checkpoint resumed
    FSDP2=(torchrun --standalone --nproc_per_node 1)
    check stage2-fsdp2-bf16 150 "${FSDP2[@]}" "${TRAIN[@]}" --fsdp --frozen-dtype bfloat16 --out "$W/fsdp2" \
        --max-steps 20 --save-every 10 --no-eval
    check stage2-fsdp2-resume 90 "${FSDP2[@]}" "${TRAIN[@]}" --fsdp --frozen-dtype bfloat16 --out "$W/fsdp2" \
        --max-steps 25 --save-every 5 --resume latest --no-eval
fi
IMG=$(ls "$W"/world/ltip/*/*.png "$W"/world/ltip/*.png 2>/dev/null | head -1)
check generate 60 $PY -m flamingo_core.cli generate --model "$W/s2/model" --device "$DEV" --image "$IMG" --prompt "<image>" --max-new-tokens 12
grep -E "^=== .* rc=|trained [0-9]+ steps|tokens_per_s|ratio_to_plain|mfu" "$LOG" | cut -c1-600 > "$OUT/summary.txt"
