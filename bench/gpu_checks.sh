#!/usr/bin/env bash
# What CPU machines cannot run, checked on CUDA GPUs in one command (issue 11):
#
#   bash bench/gpu_checks.sh [--dry-run] [--gpus N] [--steps S] [--mfu-steps S] [--out DIR] [--data TRAIN VALID]
#
# Each check trains configs/gpu/llama-124m.yaml (GPT-2 124M's shape, LLaMA-style, block 1024) for --steps optimizer
# steps with one strategy, on 1 GPU and on N GPUs (default: every visible GPU):
#   ddp-D        DDP over NCCL (--trainer.strategy ddp)
#   fsdp-D       FSDP, parameters, gradients and optimizer state sharded (--trainer.strategy fsdp)
#   zero2-D      DeepSpeed ZeRO stage 2 (--trainer.strategy deepspeed_stage_2; needs pip install -e ".[deepspeed]")
#   zero3-D      DeepSpeed ZeRO stage 3, then its checkpoint consolidated (zero_to_fp32) and exported to HF format
#   fsdp2-tp-D   FSDP2 + tensor parallelism (ModelParallelStrategy; tensor_parallel_size 2 when D >= 2), then
#                resumed from its sharded checkpoint for --steps more steps and exported to HF format
#   mfu          1 GPU, precision and compile as `lit-gpt fit` chooses them (bf16-mixed + compile on Ampere and
#                newer), --mfu-steps steps: tokens/s and MFU against the GPU's peak from Lightning's table
#   docmask-off  1 GPU, --steps steps on a corpus of short documents separated by <|endoftext|> (the TinyStoriesV2
#   docmask-on   head in ../shared/data/tinystories), without and with --data.document_mask (FlexAttention block
#                masks, positions restarting per document): their val/loss and tokens/s side by side
# Every check runs even when one fails; the script ends with a table (also written to OUT/summary.md): exit status,
# seconds, last train/loss and val/loss, tokens/s and MFU per GPU, and the train/loss relative to ddp on as many GPUs
# (the same seed and the same windows: sharding changes the arithmetic's order, not the data, so a gap over a few
# percent after --steps steps is a bug; the -resume row has trained twice as long). The exit status is 1 if any check
# failed.
#
# --dry-run prints the commands without running them (no GPU needed: tests/test_gpu_checks.py runs it on CPU).
# --data: a text corpus (default: ../shared/data/tinystories/{train,valid}.txt, else Tiny Shakespeare downloaded to
# data/tinyshakespeare/). Not run in this repository's development (no GPU was lent): docs/benchmarks.md says so.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0 GPUS="" STEPS=60 MFU_STEPS=200 OUT=runs/gpu-checks TRAIN="" VALID=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --gpus) GPUS="$2"; shift ;;
        --steps) STEPS="$2"; shift ;;
        --mfu-steps) MFU_STEPS="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --data) TRAIN="$2" VALID="$3"; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1; see bash bench/gpu_checks.sh --help" >&2; exit 2 ;;
    esac
    shift
done
case "$STEPS$MFU_STEPS" in *[!0-9]*|"") echo "error: --steps and --mfu-steps take whole numbers" >&2; exit 2 ;; esac

if [ -z "$GPUS" ]; then
    GPUS=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
    [ "$GPUS" -eq 0 ] && [ "$DRY" -eq 1 ] && GPUS=8  # a dry run shows the commands of an 8-GPU machine
fi
if [ "$GPUS" -lt 1 ]; then
    echo "error: no CUDA GPU is visible; run this on a GPU machine, or pass --dry-run to print the commands" >&2
    exit 2
fi

DATA=()
if [ -n "$TRAIN" ]; then
    DATA=(--data.path "$TRAIN" --data.val_path "$VALID")
elif [ -f ../shared/data/tinystories/train.txt ]; then
    DATA=(--data.path ../shared/data/tinystories/train.txt --data.val_path ../shared/data/tinystories/valid.txt)
else
    DATA=(--data.path data/tinyshakespeare/input.txt --data.val_path null --data.download_url
          https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)
fi
# batch 8 x 1024 tokens per GPU keeps 124M in memory under every strategy; a short warm-up so that --steps steps
# learn; one validation at the end, of 10 batches
COMMON=(--config configs/gpu/llama-124m.yaml "${DATA[@]}" --data.batch_size 8 --model.warmup_steps 10
        --trainer.accelerator gpu
        --trainer.log_every_n_steps 5 --trainer.limit_val_batches 10 --samples.max_new_tokens 0)

FAILED=0
declare -a NAMES=()
declare -A STATUS=() SECONDS_TAKEN=()

show() { printf '%q ' "$@" | sed 's/ $//'; echo; }

# check NAME COMMAND...: run (or print) one command; its output goes to OUT/NAME.log
check() {
    local name="$1"; shift
    NAMES+=("$name")
    if [ "$DRY" -eq 1 ]; then
        echo "# $name"; show "$@"; STATUS[$name]=dry; return 0
    fi
    mkdir -p "$OUT"
    echo "== $name: $(show "$@")"
    local start=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    SECONDS_TAKEN[$name]=$((SECONDS - start))
    if [ $rc -eq 0 ]; then STATUS[$name]=ok; else STATUS[$name]="exit $rc"; FAILED=1; tail -n 5 "$OUT/$name.log"; fi
}

skip() { NAMES+=("$1"); STATUS[$1]="skipped: $2"; echo "== $1: skipped: $2"; }

# fit NAME DEVICES STEPS [FLAGS...]: lit-gpt fit with the common flags, its logs and checkpoints under OUT/NAME
fit() {
    local name="$1" devices="$2" steps="$3"; shift 3
    check "$name" lit-gpt fit "${COMMON[@]}" --trainer.devices "$devices" --trainer.max_steps "$steps" \
        --trainer.val_check_interval "$steps" --trainer.logger.init_args.save_dir "$OUT" \
        --trainer.logger.init_args.name "$name" --checkpoint.dirpath "$OUT/$name/checkpoints" "$@"
}

check prepare lit-gpt prepare --config configs/gpu/llama-124m.yaml "${DATA[@]}"

DEEPSPEED=1
python -c "import deepspeed" >/dev/null 2>&1 || DEEPSPEED=0
[ "$DRY" -eq 1 ] && DEEPSPEED=1

for D in $(printf '%s\n' 1 "$GPUS" | sort -un); do
    fit "ddp-$D" "$D" "$STEPS" --trainer.strategy ddp
    fit "fsdp-$D" "$D" "$STEPS" --trainer.strategy fsdp
    if [ "$DEEPSPEED" -eq 1 ]; then
        fit "zero2-$D" "$D" "$STEPS" --trainer.strategy deepspeed_stage_2
        fit "zero3-$D" "$D" "$STEPS" --trainer.strategy deepspeed_stage_3
        # DeepSpeed's checkpoint is a folder of shards: Lightning's zero_to_fp32 wrapper writes one .ckpt to export
        check "zero3-$D-export" python -c "import sys; from lightning.pytorch.utilities.deepspeed import \
convert_zero_checkpoint_to_fp32_state_dict as c; c(sys.argv[1], sys.argv[2])" \
            "$OUT/zero3-$D/checkpoints/last.ckpt" "$OUT/zero3-$D/consolidated.ckpt"
        check "zero3-$D-hf" lit-gpt export --checkpoint "$OUT/zero3-$D/consolidated.ckpt" --out "$OUT/zero3-$D/hf"
    else
        skip "zero2-$D" 'deepspeed is not installed (pip install -e ".[deepspeed]")'
        skip "zero3-$D" 'deepspeed is not installed (pip install -e ".[deepspeed]")'
    fi
    TP=1; [ "$D" -ge 2 ] && [ $((D % 2)) -eq 0 ] && TP=2
    # tensor-parallel ranks share a batch: TP x 8 per replica keeps the global batch (and the windows) of ddp-D
    MP=(--trainer.strategy ModelParallelStrategy --trainer.strategy.tensor_parallel_size "$TP"
        --trainer.strategy.data_parallel_size $((D / TP)) --data.batch_size $((8 * TP)))
    fit "fsdp2-tp-$D" "$D" "$STEPS" "${MP[@]}"
    fit "fsdp2-tp-$D-resume" "$D" $((2 * STEPS)) "${MP[@]}" --ckpt_path "$OUT/fsdp2-tp-$D/checkpoints/last.ckpt"
    check "fsdp2-tp-$D-hf" lit-gpt export --checkpoint "$OUT/fsdp2-tp-$D-resume/checkpoints/last.ckpt" \
        --out "$OUT/fsdp2-tp-$D/hf"
done
fit mfu 1 "$MFU_STEPS" --data.batch_size 32  # the config's batch: 32 x 1024 tokens

DOCS=../shared/data/tinystories/TinyStoriesV2-GPT4-train.head.txt
if [ -f "$DOCS" ] || [ "$DRY" -eq 1 ]; then
    # whole documents in validation too (split by document); a 1024-token window holds several stories
    DOCDATA=(--data.path "$DOCS" --data.val_path null --data.download_url null --data.separator '<|endoftext|>')
    fit docmask-off 1 "$STEPS" "${DOCDATA[@]}"
    fit docmask-on 1 "$STEPS" "${DOCDATA[@]}" --data.document_mask true --data.reset_positions true
else
    skip docmask-off "$DOCS is missing"
    skip docmask-on "$DOCS is missing"
fi

if [ "$DRY" -eq 1 ]; then
    exit 0
fi

# The table: each check's status and seconds, and its run's last scalars from TensorBoard's event files
for name in "${NAMES[@]}"; do
    printf '%s\t%s\t%s\n' "$name" "${STATUS[$name]}" "${SECONDS_TAKEN[$name]:-}"
done >"$OUT/checks.tsv"
python - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import re
import sys
from pathlib import Path

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

out = Path(sys.argv[1])


def last(name: str) -> dict[str, float]:
    """The last value of every scalar of run ``name`` (its newest version folder), or {} if it logged none."""
    runs = sorted((out / name).glob("version_*"))
    if not runs:
        return {}
    events = EventAccumulator(str(runs[-1]), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


rows = [line.split("\t") for line in (out / "checks.tsv").read_text().splitlines()]
scalars = {name: last(name) for name, *_ in rows}
print("| check | status | seconds | train/loss | vs ddp | val/loss | tokens/s per GPU | MFU |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for name, status, seconds in rows:
    s = scalars[name]
    devices = re.search(r"-(\d+)(-|$)", name)
    reference = scalars.get(f"ddp-{devices[1]}", {}).get("train/loss") if devices else None
    loss = s.get("train/loss")
    compared = not name.startswith(("ddp", "mfu")) and not name.endswith("resume")  # same steps, same windows
    relative = f"{loss / reference - 1:+.2%}" if loss and reference and compared else ""
    cells = [name, status, seconds, f"{loss:.4f}" if loss else "", relative,
             f"{s['val/loss']:.4f}" if "val/loss" in s else "",
             f"{s['train/throughput/tokens_per_sec']:,.0f}" if "train/throughput/tokens_per_sec" in s else "",
             f"{s['train/throughput/mfu']:.1%}" if "train/throughput/mfu" in s else ""]
    print("| " + " | ".join(cells) + " |")
if torch.cuda.is_available():
    device = torch.device("cuda")
    name, peak = torch.cuda.get_device_name(device), get_available_flops(device, torch.bfloat16)
    print(f"\n{torch.cuda.device_count()} x {name}; MFU against "
          + (f"a bf16 dense peak of {peak / 1e12:.0f} TFLOP/s per GPU (Lightning's table)" if peak
             else "no peak: this GPU is not in Lightning's table (pass --throughput.peak_flops to lit-gpt fit)"))
EOF
exit $FAILED
