# The two set-up commands are `make demo` and `make test` (see README.md).
CARGO ?= cargo

.PHONY: all build demo test bench chaos lint tools clean

all: build

tools:
	scripts/install-tools.sh

build:
	$(CARGO) build --release --workspace --bins

# Builds everything, starts an OpenBao dev server and the Azure emulator, enables the
# plugin, configures it, issues a credential and revokes it.
demo: tools build
	scripts/demo.sh

# Every test: unit tests, black-box tests against a real OpenBao and the emulator, hvac.
test: tools
	scripts/test.sh

# Figures written to bench-results/.
bench: tools build
	$(CARGO) bench --bench runtime
	$(CARGO) bench --bench issuance

# The fault suite (README "Fault suite"): a few minutes; figures in bench-results/chaos.json.
chaos: tools
	scripts/chaos.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .venv bench-results
