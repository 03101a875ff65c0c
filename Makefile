# shard: build, run, test, bench, lint. `make help` lists the targets.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/shard

.PHONY: help build run test deps sdk-test alerts bench bench-hot lint fuzz clean

help:
	@echo "make run    - build and start a 3-node cluster behind nginx on loopback (Ctrl-C stops it)"
	@echo "make test   - install what the tests need, then lint, alerts, every Go test with the race detector (and the packages of the raw system calls without it), sdk-test and fuzz"
	@echo "make deps   - install with apt-get the Debian packages the tests need (scripts/deps.sh)"
	@echo "make sdk-test   - the JavaScript client's tests (node --test) against real nodes"
	@echo "make bench      - load generator: local 3-node cluster, 300 users, 2,000 msg/s, 10 s (BENCH_ARGS adds flags)"
	@echo "make bench-hot  - hot-path benchmarks with allocations"
	@echo "make lint   - gofmt and go vet"
	@echo "make alerts - promtool checks deploy/prometheus/alerts.yml and runs its tests"
	@echo "make fuzz   - a short run of each fuzzer (FUZZEXECS inputs each) on its seed corpus"

build:
	$(GO) build -o $(BIN) ./cmd/shard

run: build
	scripts/deps.sh nginx postgresql curl
	scripts/run-cluster.sh

# Installs the system packages the tests drive for real, then runs them all.
test: deps lint alerts
	$(GO) test -race -count=1 -timeout 15m ./...
	# Race builds read and write sockets through the scheduler (internal/rawsys):
	# the raw system calls get their own run.
	$(GO) test -count=1 -timeout 5m ./internal/rawsys ./link ./session ./store
	$(MAKE) sdk-test
	$(MAKE) fuzz

deps:
	scripts/deps.sh gcc libc6-dev nginx chromium curl iproute2 postgresql prometheus nodejs npm

# The JavaScript client (web/sdk) against real nodes: its tests build
# bin/shard and start PostgreSQL (scripts/pg-start.sh) themselves. ws, its
# one (development) dependency, comes from the committed lock file.
sdk-test:
	cd web/sdk && npm ci --no-audit --no-fund --loglevel=error && node --test test/*.test.js

# The alerting rules of deploy/: valid, and each alert firing on the trouble
# it names (alerts_test.yml). promtool comes with Debian's prometheus package.
alerts:
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

# A short run of each fuzzer on top of its committed seed corpus. The budget is
# a count of inputs, not a duration: Go 1.26's fuzz coordinator can fail a
# duration run with a bare "context deadline exceeded" when its deadline fires
# (golang/go#75804, fixed in Go 1.27), and did so in CI. About 10 s each here.
FUZZEXECS ?= 100000
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZEXECS)x ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzPeerFrame$$' -fuzztime $(FUZZEXECS)x ./router/
	$(GO) test -run '^$$' -fuzz '^FuzzHandshake$$' -fuzztime $(FUZZEXECS)x ./link/

BENCH_ARGS ?=
bench:
	$(GO) run ./bench --nodes 3 --users 300 --rate 2000 --duration 10s $(BENCH_ARGS)

bench-hot:
	$(GO) test -run '^$$' -bench . -benchmem ./protocol/ ./session/ ./ring/ ./router/ ./link/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would rewrite:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
