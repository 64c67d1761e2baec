# fleetrelay — see README.md.
GO      ?= go
PKGS    ?= ./...
FUZZTIME ?= 10s

.PHONY: run test bench bench-micro bench-e2e demo fuzz lint check build

## run: the relay on its embedded defaults (loopback listeners, ./data, no routes)
run:
	$(GO) run ./cmd/fleetrelay $(ARGS)

build:
	$(GO) build -o bin/ ./cmd/...

## test: vet + race tests (what CI runs)
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## bench: micro-benchmarks once, then the quick end-to-end scenario set (bench/results/)
bench: bench-micro bench-e2e

COUNT ?= 1
## bench-micro: hot-path micro-benchmarks (COUNT=3 for the README's medians)
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem -count $(COUNT) ./codec/... ./internal/store/ ./internal/deliver/

## bench-e2e: relay process + sink + simulated fleet, per bench/scenarios/*.yaml (quick set)
bench-e2e:
	$(GO) run ./cmd/bench -quick

## demo: a small fleet -> relay -> sink for 20 s, one status line per second
demo:
	$(GO) run ./cmd/bench -demo

## fuzz: a short run of every fuzz target
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

lint:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

check: lint test
