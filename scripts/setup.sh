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
fi
