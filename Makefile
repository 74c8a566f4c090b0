# vhostd: userspace virtio-net datapath (vhost-user back-end) in Go.
#
#   make build   build bin/vhostd and bin/vhostd-cni (the CNI plugin)
#   make test    unit + integration tests (root-only tests skip with a message outside CI)
#   make bench   go benchmarks with -benchmem (quote figures as ratios to the same-run baseline)
#   make fuzz    every fuzz target for FUZZTIME each (default 10s)
#   make lint    gofmt check, go vet, staticcheck when it installs
#   make e2e     end-to-end tests with a real QEMU guest (root, qemu-system-x86)
#   make demo    the main job on a fresh machine: guest -> vhostd -> tap, iperf3, report

GO        ?= go
BIN       ?= bin/vhostd
FUZZTIME  ?= 10s
BENCHTIME ?= 1s
PKGS      ?= ./...
GOFLAGS_TEST ?= -count=1 -timeout 20m

.PHONY: all build test test-race bench fuzz lint e2e demo clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/vhostd
	$(GO) build -o bin/vhostd-cni ./cmd/vhostd-cni

test: build
	$(GO) vet $(PKGS)
	$(GO) test $(GOFLAGS_TEST) $(PKGS)

test-race:
	$(GO) test -race $(GOFLAGS_TEST) $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

# Each target runs alone (go test allows one -fuzz pattern per package run).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do \
	    echo "== fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@if command -v staticcheck >/dev/null 2>&1 || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest >/dev/null 2>&1; then \
	  PATH="$$PATH:$$($(GO) env GOPATH)/bin" staticcheck $(PKGS); \
	else echo "staticcheck did not install; skipped"; fi

e2e: build
	bash scripts/e2e/run-all.sh

demo:
	bash scripts/demo.sh

# A/B of the GSO policies on a real guest: docs/ab-report.md + docs/ab-chart.svg
.PHONY: ab
ab: build
	bash scripts/ab/run.sh

clean:
	rm -rf bin
