#!/usr/bin/env bash
# tools/benchmark.py on every benchmark model, one process each, and a table.
#
#   tools/accelerator_benchmarks.sh [OUT_DIR]     (default runs/accelerator_benchmarks)
#
# For a GPU or TPU host (it runs on a CPU too, slowly): GPT-2 small (124M, context
# 1024, bf16) with the default attention (cuDNN's fused kernel on a GPU) and with
# XLA's, nanoGPT's baby GPT (experiments/shakespeare_gpt.py, full size) in bf16 and
# fp32, experiments/benchmarks.py's four PyTorch-comparison models at their fp32
# shapes, and GPT-mini in bf16. Each writes OUT_DIR/NAME.json; a failed one is reported and
# skipped. BENCH_STEPS (default 50) steps per timed window, 3 windows.
set -u
out=${1:-runs/accelerator_benchmarks}
steps=${BENCH_STEPS:-50}
mkdir -p "$out"
bench() {  # NAME FLAGS...
  local name=$1
  shift
  echo "== $name" >&2
  python3 tools/benchmark.py --steps="$steps" --windows=3 --json="$out/$name.json" "$@" \
    || echo "!! $name failed" >&2
}
b=experiments/benchmarks.py
bench gpt2_small --config=$b:gpt2_small
bench gpt2_small_xla_attention --config=$b:gpt2_small --config.attention=xla
bench baby_gpt_bf16 --config=experiments/shakespeare_gpt.py --config.train.compute_dtype=bfloat16
bench baby_gpt --config=experiments/shakespeare_gpt.py
bench cnn --config=$b:cnn
bench resnet20 --config=$b:resnet20
bench lstm --config=$b:lstm
bench gpt_mini --config=$b:gpt_mini
bench gpt_mini_bf16 --config=$b:gpt_mini --config.train.compute_dtype=bfloat16
python3 - "$out" <<'PY'
import json, pathlib, sys
rows = sorted(pathlib.Path(sys.argv[1]).glob('*.json'), key=lambda p: p.stat().st_mtime)
print(f"{'run':26} {'device':22} {'dtype':9} {'params':>11} {'steps/s':>9} {'tokens/s':>11} "
      f"{'TFLOP/step':>10} {'TFLOP/s':>8} {'MFU':>6} {'compile s':>9}")
for path in rows:
  r = json.loads(path.read_text())
  tokens = f"{r['tokens_per_sec']:.0f}" if r.get('tokens_per_sec') else '-'
  mfu = f"{100 * r['mfu']:.1f}%" if r.get('mfu') else '?'
  print(f"{path.stem:26} {r['device_kind'][:22]:22} {r['dtype']:9} {r['num_params']:>11,} "
        f"{r['steps_per_sec']:>9.2f} {tokens:>11} {r['flops_per_step'] / 1e12:>10.3f} "
        f"{r['flops_per_sec'] / 1e12:>8.2f} {mfu:>6} {r['compile_seconds']:>9.1f}")
PY
