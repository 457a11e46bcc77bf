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

# s2cloudless (Sentinel Hub, CC BY-SA 4.0): its LightGBM model converted to ONNX from the pinned
# PyPI package by models/s2cloudless/convert.py, once; the result must be byte-identical to the
# file models/s2cloudless.json records (sha256), else it is not used.
s2c_onnx=models/s2cloudless/s2cloudless.onnx
s2c_sha=e28387c1d7d6b77eb9f494e4d3896d3749593dbb7f5752f9fda1830e68f018d1
s2c_venv=.venv-s2cloudless
if [ ! -f "$s2c_onnx" ] || [ "$(sha256sum "$s2c_onnx" | cut -d' ' -f1)" != "$s2c_sha" ]; then
  if ! "$s2c_venv/bin/python" -c 'import lightgbm, onnxmltools' >/dev/null 2>&1; then
    echo "building $s2c_venv (s2cloudless -> ONNX conversion)" >&2
    rm -rf "$s2c_venv"
    python3 -m venv "$s2c_venv"
    "$s2c_venv/bin/python" -m pip install --quiet --no-deps -r models/s2cloudless/requirements.txt
  fi
  echo "converting s2cloudless to ONNX ($s2c_onnx)" >&2
  rm -f "$s2c_onnx"
  "$s2c_venv/bin/python" models/s2cloudless/convert.py --no-check "$s2c_onnx.tmp" >/dev/null
  got=$(sha256sum "$s2c_onnx.tmp" | cut -d' ' -f1)
  if [ "$got" != "$s2c_sha" ]; then
    rm -f "$s2c_onnx.tmp"
    echo "error: the s2cloudless conversion gave sha256 $got, not $s2c_sha (models/s2cloudless.json);" >&2
    echo "check the pinned versions in models/s2cloudless/requirements.txt" >&2
    exit 1
  fi
  mv "$s2c_onnx.tmp" "$s2c_onnx"
fi

if [ "${1:-}" = "--reference" ]; then
  # Real QGIS for the analyst-output tests (PyQGIS, headless).
  if ! /usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1; then
    echo "installing Debian packages: python3-qgis qgis-providers (QGIS, for tests)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      python3-qgis qgis-providers >/dev/null
  fi
  venv=.venv-reference
  stamp="$venv/.installed"
  want=$(cat tests/reference/requirements.txt scripts/assets.sha256 | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "building $venv (ukis-csmask reference for the fidelity tests)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --no-deps -r tests/reference/requirements.txt
    "$venv/bin/python" -m pip install --quiet --no-deps \
      .cache/wheels/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl \
      .cache/wheels/ukis_csmask-1.0.0-py3-none-any.whl
    "$venv/bin/python" -c 'import ukis_csmask.mask, tifffile'
    echo "$want" > "$stamp"
  fi

  # s2cloudless's own Python (OpenCV, sentinelhub) for the s2cloudless fidelity tests.
  s2c_stamp="$s2c_venv/.verify-installed"
  s2c_want=$(cat models/s2cloudless/requirements.txt models/s2cloudless/requirements-verify.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$s2c_stamp" ] || [ "$(cat "$s2c_stamp")" != "$s2c_want" ]; then
    echo "installing s2cloudless's reference dependencies into $s2c_venv" >&2
    "$s2c_venv/bin/python" -m pip install --quiet --no-deps -r models/s2cloudless/requirements.txt \
      -r models/s2cloudless/requirements-verify.txt
    "$s2c_venv/bin/python" -c 'from s2cloudless import S2PixelCloudDetector; import tifffile'
    echo "$s2c_want" > "$s2c_stamp"
  fi

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
  stac_venv=.venv-stacapi
  stac_stamp="$stac_venv/.installed"
  stac_want=$(sha256sum tests/reference/stacapi-requirements.txt | cut -d' ' -f1)
  if [ ! -f "$stac_stamp" ] || [ "$(cat "$stac_stamp")" != "$stac_want" ]; then
    echo "building $stac_venv (pgstac + stac-fastapi-pgstac, for the monitor tests)" >&2
    rm -rf "$stac_venv"
    python3 -m venv "$stac_venv"
    "$stac_venv/bin/python" -m pip install --quiet --no-deps -r tests/reference/stacapi-requirements.txt
    "$stac_venv/bin/python" -c 'import pypgstac.migrate, pypgstac.load, psycopg, uvicorn, asyncpg, stac_fastapi.pgstac.config'
    echo "$stac_want" > "$stac_stamp"
  fi
fi
