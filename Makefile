# tmcs — the two commands of the README:
#   make demo   installs what is missing, builds, runs `tmcs demo`
#               (which runs `tmcs-tools demo`, built next to `tmcs`)
#   make test   installs what is missing, then fmt, clippy and the whole suite
#               against SoftHSM2, SQLite and a throwaway PostgreSQL cluster
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# Debian packages the build and the tests need (libxml2-utils: xmllint, with
# which `tmcs-tools sim bank` validates every pain.001 against the XSD;
# chromium: the headless browser that renders `tmcs audit report` in its test).
APT_PKGS := softhsm2 opensc openssl libssl-dev libpq-dev pkg-config gcc make \
            postgresql postgresql-common python3 curl ca-certificates \
            libxml2-utils chromium

.PHONY: all deps build release demo test lint bench serve clean

all: build

deps:
	@missing=""; \
	for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust (rustup) first" >&2; exit 1; }
	@scripts/python-deps.sh

# The whole workspace: `tmcs` (the service) and `tmcs-tools` (demo, bench).
build: deps
	$(CARGO) build --release --workspace

release: build

demo: build
	./target/release/tmcs demo

serve: build
	./target/release/tmcs init
	./target/release/tmcs serve

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	rm -rf target/softhsm-test
	scripts/with-postgres.sh $(CARGO) test --workspace --all-targets --no-fail-fast

bench: build
	scripts/with-postgres.sh scripts/bench.sh $(BENCH_ARGS)

clean:
	$(CARGO) clean
