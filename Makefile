# Postern build. `make test` is what CI runs.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin/postern

.PHONY: build test unit cross vet demo lint bench bench-quick package wine-shim clean

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
