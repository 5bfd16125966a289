# Postern build. `make test` is what CI runs.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/postern

.PHONY: build test unit cross vet demo lint fuzz soak bench bench-quick package wine-shim clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/postern

# vet, race tests (unit, integration, end-to-end), cross-compilation.
test: vet cross unit

vet:
	$(GO) vet ./...

# internal/yamux is the multiplexer kept in-tree (a module of its own, which
# ./... does not reach): its own suite runs too. -short skips its 1 GiB
# transfer, which it says may time out under the race detector.
unit:
	$(GO) test -race -count=1 -timeout 20m ./...
	cd internal/yamux && $(GO) test -race -short -count=1 -timeout 10m ./...

# Windows and Linux/arm64 builds, so OS-specific code cannot rot unseen.
cross:
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./...
	GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./...
	GOOS=linux GOARCH=amd64 $(GO) build -o /dev/null ./...

demo: build
	./$(BIN) demo

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Every Fuzz target in the module, one after the other, for FUZZTIME each
# with one worker; targets are found with `go test -list`, so new ones join
# by themselves. Not part of `test` (their seeds run there as tests). A
# failing input is saved under the package's testdata/fuzz/ and fails the
# run; a target that fails without writing one hit Go's coordinator ending
# its -fuzztime run with "context deadline exceeded" (a known race), which
# is reported but not counted. FUZZFLAGS adds go test flags.
FUZZTIME  ?= 30s
FUZZFLAGS ?=
fuzz:
	@list=$$($(GO) test -list '^Fuzz' ./...) || { echo "$$list"; exit 1; }; \
	targets=$$(echo "$$list" | awk '/^Fuzz/ { n[++c] = $$1 } /^ok/ { for (i = 1; i <= c; i++) print $$2 "," n[i]; c = 0 }'); \
	failed=""; \
	for pt in $$targets; do \
		pkg=$${pt%,*}; target=$${pt#*,}; \
		corpus=$$($(GO) list -f '{{.Dir}}' $$pkg)/testdata/fuzz/$$target; \
		before=$$(ls $$corpus 2>/dev/null | wc -l); \
		echo "== $$target ($$pkg), $(FUZZTIME)"; \
		if ! $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -parallel 1 $(FUZZFLAGS) $$pkg; then \
			if [ "$$(ls $$corpus 2>/dev/null | wc -l)" -gt "$$before" ]; then failed="$$failed $$pkg.$$target"; \
			else echo "fuzz: $$target ended in error without a failing input (Go's -fuzztime shutdown race): not counted"; fi; \
		fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failing inputs for:$$failed"; exit 1; fi

# Side-by-side benchmark: direct TCP, Postern, stunnel4, HAProxy on loopback
# (installs them if missing); see docs/performance.md. Not part of `test`.
bench:
	GO=$(GO) bench/bench.sh

bench-quick:
	GO=$(GO) bench/bench.sh --quick

# Release artifacts in dist/: .tar.gz (linux amd64, arm64), .zip (windows
# amd64), .deb and .rpm (nfpm), .msi (wixl), SHA256SUMS; version from git.
# SIGN_PKCS12 (+SIGN_PASSWORD_FILE) or SIGN_CERT+SIGN_KEY Authenticode-sign
# postern.exe and the MSI; see packaging/build.sh.
package:
	VERSION=$(VERSION) GO=$(GO) DIST=dist packaging/build.sh

# bcryptprimitives.dll that lets Go Windows binaries run under wine 8
# (tests/service_wine_test.go builds its own); copy it into the prefix's
# windows/system32.
wine-shim:
	mkdir -p bin
	x86_64-w64-mingw32-gcc -shared -O2 -s -o bin/bcryptprimitives.dll \
		packaging/windows/prngshim/bcryptprimitives.c packaging/windows/prngshim/bcryptprimitives.def -ladvapi32

clean:
	rm -rf bin dist

# Fault soak (tests/soak_test.go, TestSoak): mixed load through two agents
# with random faults for SOAK_DURATION; prints what moved and how every
# transfer ended, and fails on any transfer corrupted or cut but clean.
# Not part of `test`. Run from tests/ so the figures print as they come.
SOAK_DURATION ?= 10m
SOAK_TIMEOUT  ?= ${shell d='$(SOAK_DURATION)'; case $$d in *h) echo $$(( $${d%h} * 60 + 15 ))m;; *m) echo $$(( $${d%m} + 15 ))m;; *s) echo $$(( $${d%s} + 900 ))s;; *) echo 3h;; esac}

soak:
	cd tests && $(GO) test -count=1 -run '^TestSoak$$' -timeout $(SOAK_TIMEOUT) -soak $(SOAK_DURATION)
