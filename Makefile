# fleetrelay — see README.md.
GO      ?= go
PKGS    ?= ./...
FUZZTIME ?= 10s

.PHONY: run test bench fuzz lint check build

## run: the relay on its embedded defaults (loopback listeners, ./data, no routes)
run:
	$(GO) run ./cmd/fleetrelay $(ARGS)

build:
	$(GO) build -o bin/ ./cmd/...

## test: vet + race tests (what CI runs)
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## bench: the micro-benchmarks quoted in the README
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./codec/... ./internal/store/ ./internal/deliver/

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
