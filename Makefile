# The two set-up commands are `make demo` and `make test` (see README.md).
CARGO ?= cargo

.PHONY: all build demo test bench chaos lint tools clean release release-check oci-test

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

# Figures written to bench-results/*.json, then docs/benchmarks.md and its plots
# (docs/benchmarks/*.svg) drawn from them. About 10 minutes on 2 cores.
bench: tools build
	$(CARGO) bench --bench runtime
	$(CARGO) bench --bench issuance
	$(CARGO) bench --bench pool
	$(CARGO) bench --bench revoke
	$(CARGO) bench --bench memory
	$(CARGO) bench --bench report

# The fault suite (README "Fault suite"): a few minutes; figures in bench-results/chaos.json.
chaos: tools
	scripts/chaos.sh

# Release artifacts in dist/ (static binary, SHA256SUMS, CycloneDX SBOM, OCI image archive,
# OpenBao plugin stanza), versioned from Cargo.toml, then verified. OCI_REPOSITORY=<registry/repo>
# names where the image will be pushed (it goes into the stanza).
release:
	scripts/release.sh
	scripts/check-release.sh

release-check:
	scripts/check-release.sh

# OpenBao installs the release image from a TLS registry on loopback and issues a credential
# (tests/oci_install.rs, with the static binary of `make release` in the image).
oci-test: release
	scripts/install-registry.sh
	$(CARGO) build --workspace --bins
	PLUGIN_IMAGE_BINARY=$(CURDIR)/dist/vault-plugin-secrets-azure_$$(scripts/release-version.sh)_linux_amd64 \
		$(CARGO) test --test oci_install -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .venv bench-results dist
