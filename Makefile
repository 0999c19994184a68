# chatql — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
PKGS  := ./...
comma := ,

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: run
run: DB_VAR = DATABASE_URL
run: postgres ## Run the server (no DATABASE_URL: private local Postgres in .data/ with demo data)
	@mkdir -p bin
	$(GO) build -o bin/chatql .
	./bin/chatql

.PHONY: test
test: DB_VAR = TEST_DATABASE_URL
test: postgres pgbouncer chromium clients ## Run vet and the whole test suite against a real PostgreSQL (with the npm client suite, and the playground in headless Chromium)
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

.PHONY: test-short
test-short: DB_VAR = TEST_DATABASE_URL
test-short: postgres ## The inner loop (under a minute): vet and the tests without load, fault, pooler and multi-process ones, -short, without -race
	$(GO) vet $(PKGS)
	$(GO) test -short -count=1 -timeout 5m $(PKGS)

.PHONY: bench
bench: postgres ## Benchmarks, the load matrix (16/64/256 clients; chatql with admission on and off, and the raw-SQL and plain-HTTP ceilings), the fairness scenarios (one user flooding, open-loop overload) and 2,000 subscribers, on a private PostgreSQL (about 7 minutes)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 200x .
	@mkdir -p bin
	$(GO) build -o bin/chatql .
	$(GO) run ./cmd/chatload bench -chatql bin/chatql -c 16,64,256 -d 20s

.PHONY: bench-peers
bench-peers: postgres postgraphile ## chatql beside PostGraphile 4 (npm) on the same private PostgreSQL and data set, the Inbox at 16/64/256 clients (about 3 minutes)
	@mkdir -p bin
	$(GO) build -o bin/chatql .
	$(GO) run ./cmd/chatload peers -chatql bin/chatql -c 16,64,256 -d 20s

# FUZZTIME is how long `make fuzz` runs each fuzz target.
FUZZTIME ?= 30s

.PHONY: fuzz
fuzz: ## Run each fuzz target in turn for FUZZTIME (default 30s) each
	$(GO) test -run '^$$' -fuzz '^FuzzCount$$' -fuzztime $(FUZZTIME) ./document
	$(GO) test -run '^$$' -fuzz '^FuzzParseID$$' -fuzztime $(FUZZTIME) ./chat
	$(GO) test -run '^$$' -fuzz '^FuzzParseCursor$$' -fuzztime $(FUZZTIME) ./chat
	$(GO) test -run '^$$' -fuzz '^FuzzParseMessageCursor$$' -fuzztime $(FUZZTIME) ./chat
	$(GO) test -run '^$$' -fuzz '^FuzzCleanDecodeError$$' -fuzztime $(FUZZTIME) ./web

.PHONY: lint
lint: ## gofmt, go vet, generated code up to date, the playground's vendored files match their pinned hashes
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) generate ./... && git diff --exit-code -- graph
	$(GO) test -count=1 -run '^TestVendoredAssets$$' ./playground

.PHONY: generate
generate: ## Regenerate the gqlgen code from schema.graphqls
	$(GO) generate ./...

.PHONY: migrate
migrate: DB_VAR = DATABASE_URL
migrate: postgres ## Apply pending migrations and exit
	$(GO) run . migrate

# install, when called as $(call install,PACKAGE,WHAT), installs a Debian
# package with apt-get as root, or else stops with one line saying what to
# install.
define install
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(2) (apt-get install -y $(1))"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $(1) >/dev/null || exit 1; \
	else \
		echo "$(2) not found: install it (sudo apt-get install $(1), or brew install $(1))$(3)"; \
		exit 1; \
	fi
endef

# postgres makes sure Go and, unless $(DB_VAR) names a database, the
# PostgreSQL server binaries are present. The tests also need PgBouncer
# (the pooler tests put it in front of PostgreSQL).
.PHONY: postgres
postgres:
	@command -v $(GO) >/dev/null 2>&1 || { echo "Go not found: install Go 1.26 or later (https://go.dev/doc/install)"; exit 1; }
	@if [ -n "$(DB_VAR)" ] && [ -n "$${$(DB_VAR)}" ]; then exit 0; fi; \
	if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi; \
	$(call install,postgresql,PostgreSQL server binaries (initdb),$(if $(DB_VAR), or set $(DB_VAR)))

# clients makes sure Node.js and npm are present and clients/node_modules
# matches clients/package-lock.json, for the client compatibility suite
# (api_clients_test.go).
.PHONY: clients
clients:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then exit 0; fi; \
	$(call install,nodejs npm,Node.js and npm)
	@if [ ! -f clients/node_modules/.package-lock.json ] || [ clients/package-lock.json -nt clients/node_modules/.package-lock.json ]; then \
		echo "npm ci in clients/"; cd clients && npm ci --no-audit --no-fund --loglevel=error; \
	fi

# postgraphile makes sure Node.js and npm are present and
# load/postgraphile/node_modules matches its package-lock.json, for
# `make bench-peers`.
.PHONY: postgraphile
postgraphile:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then exit 0; fi; \
	$(call install,nodejs npm,Node.js and npm)
	@if [ ! -f load/postgraphile/node_modules/.package-lock.json ] || [ load/postgraphile/package-lock.json -nt load/postgraphile/node_modules/.package-lock.json ]; then \
		echo "npm ci in load/postgraphile/"; cd load/postgraphile && npm ci --no-audit --no-fund --loglevel=error; \
	fi

.PHONY: pgbouncer
pgbouncer:
	@if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then exit 0; fi; \
	$(call install,pgbouncer,PgBouncer)

# chromium is the browser the playground's test drives (headless); CHROMIUM
# may name another Chromium or Chrome binary.
.PHONY: chromium
chromium:
	@if [ -n "$${CHROMIUM}" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| command -v google-chrome >/dev/null 2>&1; then exit 0; fi; \
	$(call install,chromium,Chromium (for the playground's browser test),$(comma) or set CHROMIUM)
