#!/usr/bin/env bash
# Installs what is missing, idempotently, then fetches the pinned assets:
#   - Debian packages: GDAL (libgdal-dev, gdal-bin), pkg-config, Python venv/pip
#   - assets from PyPI, checksum-verified (scripts/fetch-assets.sh)
#   - manifests are committed; models/ukis-csmask holds the fetched ONNX files
# With --reference also installs QGIS (python3-qgis) and builds .venv-reference (ukis-csmask's
# Python reference, rasterio, geopandas, DuckDB, pystac: for tests and the benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gdalinfo >/dev/null 2>&1 || need_apt+=(gdal-bin)
command -v gdal-config >/dev/null 2>&1 || need_apt+=(libgdal-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo was not found. eoinfer needs Rust 1.85 or newer (edition 2024);" >&2
  echo "install it with rustup (https://rustup.rs), then run this command again." >&2
  exit 2
fi

scripts/fetch-assets.sh

# The Python environments are built once per set of pinned requirements in the user's cache
# (${EOINFER_CACHE:-~/.cache/eoinfer}/venvs/NAME-KEY, KEY the sha256 of what goes in) and linked
# into the checkout as .venv-NAME: a second checkout or a clean clone (CI) reuses them instead of
# installing again. A finished environment is never changed; one whose requirements change gets
# a new folder. Deleting ~/.cache/eoinfer is safe: the next run builds them again.
cache_root=${EOINFER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eoinfer}
mkdir -p "$cache_root/venvs"
# cached_venv LINK WHAT CHECK PIP-ARGS...: LINK -> a venv holding `pip install --no-deps
# PIP-ARGS` (requirement files and wheel files), in which the Python code CHECK runs.
cached_venv() {
  local link=$1 what=$2 check=$3
  shift 3
  local key
  key=$( (
    printf '%s\n' "$(python3 --version)" "$check" "$@"
    for a in "$@"; do
      if [ -f "$a" ]; then sha256sum "$a"; fi
    done
  ) | sha256sum | cut -d' ' -f1)
  local dir="$cache_root/venvs/${link#.venv-}-${key:0:16}"
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$dir" ] \
    && [ "$(cat "$dir/.installed" 2>/dev/null)" = "$key" ]; then
    return
  fi
  (
    flock 9
    if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$key" ]; then
      echo "building $dir ($what)" >&2
      rm -rf "$dir"
      python3 -m venv "$dir"
      "$dir/bin/python" -m pip install --quiet --no-deps "$@"
      "$dir/bin/python" -c "$check"
      echo "$key" >"$dir/.installed"
    fi
  ) 9>"$dir.lock"
  rm -rf "$link"
  ln -s "$dir" "$link"
}

# s2cloudless (Sentinel Hub, CC BY-SA 4.0): its LightGBM model converted to ONNX from the pinned
# PyPI package by models/s2cloudless/convert.py, once; the result must be byte-identical to the
# file models/s2cloudless.json records (sha256), else it is not used.
reference=""
[ "${1:-}" = "--reference" ] && reference=1
s2c_onnx=models/s2cloudless/s2cloudless.onnx
s2c_sha=e28387c1d7d6b77eb9f494e4d3896d3749593dbb7f5752f9fda1830e68f018d1
s2c_kept="$cache_root/s2cloudless-$s2c_sha.onnx"
s2c_good() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$s2c_sha" ]; }
# .venv-s2cloudless: the conversion's Python; with --reference also s2cloudless's own (OpenCV,
# sentinelhub) for the s2cloudless fidelity tests.
s2c_venv() {
  if [ -n "$reference" ]; then
    cached_venv .venv-s2cloudless "s2cloudless, its ONNX conversion and reference" \
      'import lightgbm, onnxmltools; from s2cloudless import S2PixelCloudDetector; import tifffile' \
      -r models/s2cloudless/requirements.txt -r models/s2cloudless/requirements-verify.txt
  else
    cached_venv .venv-s2cloudless "s2cloudless's ONNX conversion" 'import lightgbm, onnxmltools' \
      -r models/s2cloudless/requirements.txt
  fi
}
if ! s2c_good "$s2c_onnx"; then
  rm -f "$s2c_onnx"
  if s2c_good "$s2c_kept"; then
    cp "$s2c_kept" "$s2c_onnx.tmp"
  else
    s2c_venv
    echo "converting s2cloudless to ONNX ($s2c_onnx)" >&2
    .venv-s2cloudless/bin/python models/s2cloudless/convert.py --no-check "$s2c_onnx.tmp" >/dev/null
    if ! s2c_good "$s2c_onnx.tmp"; then
      echo "error: the s2cloudless conversion gave sha256 $(sha256sum "$s2c_onnx.tmp" | cut -d' ' -f1), not $s2c_sha (models/s2cloudless.json);" >&2
      rm -f "$s2c_onnx.tmp"
      echo "check the pinned versions in models/s2cloudless/requirements.txt" >&2
      exit 1
    fi
    cp "$s2c_onnx.tmp" "$s2c_kept.$$" && mv "$s2c_kept.$$" "$s2c_kept"
  fi
  mv "$s2c_onnx.tmp" "$s2c_onnx"
fi

if [ -n "$reference" ]; then
  s2c_venv
  # Real QGIS for the analyst-output tests (PyQGIS, headless).
  if ! /usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1; then
    echo "installing Debian packages: python3-qgis qgis-providers (QGIS, for tests)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      python3-qgis qgis-providers >/dev/null
  fi
  cached_venv .venv-reference "ukis-csmask reference for the fidelity tests" \
    'import ukis_csmask.mask, tifffile' -r tests/reference/requirements.txt \
    .cache/wheels/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl \
    .cache/wheels/ukis_csmask-1.0.0-py3-none-any.whl

  # A real STAC API for the monitor tests (tests/reference/stac_api.py): PostgreSQL 15 + PostGIS
  # from Debian, pgstac and stac-fastapi-pgstac from PyPI. The tests run their own throw-away
  # cluster on free loopback ports; the system cluster Debian may create and start on install
  # (15/main, port 5432) is left as it is and nothing uses it.
  # `ip` and `unshare` run the monitor test inside a network namespace with only loopback.
  if [ ! -x /usr/lib/postgresql/15/bin/initdb ] \
    || [ ! -f /usr/share/postgresql/15/extension/postgis.control ] \
    || ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
    echo "installing Debian packages: postgresql-15 postgresql-15-postgis-3 iproute2 util-linux (STAC API, network namespace, for tests)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      postgresql-15 postgresql-15-postgis-3 iproute2 util-linux >/dev/null
  fi
  cached_venv .venv-stacapi "pgstac + stac-fastapi-pgstac, for the monitor tests" \
    'import pypgstac.migrate, pypgstac.load, psycopg, uvicorn, asyncpg, stac_fastapi.pgstac.config' \
    -r tests/reference/stacapi-requirements.txt
fi
