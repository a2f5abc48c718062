# Build, test and demo targets. `make demo` and `make test` are the two
# commands a fresh machine needs (see README.md).
GO        ?= go
BIN       := bin
PKGS      := ./...
# make test runs with -race. In CI every test that needs a simulator, a database server or root must
# run: REQUIRE_SIM=1 turns their skips into failures. `make test-quick`
# leaves it unset for laptops.
REQUIRE_SIM ?= 1
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
# postgresql, mariadb-server: the SQL engine tests; softhsm2: PKCS#11 key manager tests;
# swtpm, swtpm-tools: TPM attestation tests; systemd: systemd-analyze
# verify of the packaged units and the systemd attestor's real manager
# (systemd --user); docker.io: the private dockerd of the docker and k8s
# attestor tests; dbus: the bus that manager serves.
DEB_PACKAGES := postgresql mariadb-server softhsm2 swtpm swtpm-tools systemd docker.io dbus
# VERSION is what -version prints (a leading "v" is dropped, as SPIRE's
# release numbers have none). Outside a git checkout it is empty and the
# binaries fall back to the Go build information (internal/version).
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null)
LDFLAGS   := -X github.com/spiffe-hw/spire-hw/internal/version.stamp=$(VERSION)

.PHONY: all build test test-quick deps demo bench lint fmt vet staticcheck clean fuzz interop generate demo-tpm demo-attest demo-docker demo-federation bench-peer dist

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/spire-server ./cmd/spire-server
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/spire-agent ./cmd/spire-agent
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/oidc-discovery-provider ./cmd/oidc-discovery-provider

# deps installs the Debian packages the tests need, once.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: deps build
	REQUIRE_SIM=$(REQUIRE_SIM) $(GO) test -race -count=1 -timeout 30m $(PKGS)

test-quick:
	$(GO) test -count=1 $(PKGS)

# Runs each fuzz target for FUZZTIME; the seeds always run as part of
# `make test`. Targets are found in every *_test.go file of every package of
# this module (go list, so test/interop and bench/peer, modules of their
# own, are not included), whatever the file is named; finding none, or a
# package go list cannot load, is an error rather than a silent pass.
# Go 1.26's coordinator can fail a clean run at the FUZZTIME boundary with
# a bare "context deadline exceeded" when the machine is loaded
# (go.dev/issue/75804, fixed in Go 1.27): such a run, with no input
# written to testdata/fuzz, is run once more, and if it happens again it is
# named in a warning at the end instead of failing the whole sweep. Any
# other failure stops the sweep.
FUZZTIME ?= 10s
fuzz:
	@pkgs=$$($(GO) list -f '{{.ImportPath}}:{{.Dir}}' $(PKGS)) || exit 1; \
	log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	n=0; raced=""; \
	for p in $$pkgs; do \
		pkg=$${p%%:*}; dir=$${p#*:}; \
		ls $$dir/*_test.go >/dev/null 2>&1 || continue; \
		for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)([A-Za-z0-9_]* \*testing\.F).*/\1/p' $$dir/*_test.go | sort -u); do \
			n=$$((n+1)); \
			for try in 1 2; do \
				echo "== $$pkg $$f"; \
				before=$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null); \
				if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$log 2>&1; then cat $$log; break; fi; \
				cat $$log; \
				if [ "$$(ls $$dir/testdata/fuzz/$$f 2>/dev/null)" != "$$before" ] || ! grep -q '^    context deadline exceeded$$' $$log; then exit 1; fi; \
				if [ $$try -eq 2 ]; then raced="$$raced $$pkg.$$f"; \
				else echo "fuzz: $$f: the coordinator missed its own deadline (go.dev/issue/75804) and found no input; running it once more"; fi; \
			done; \
		done; \
	done; \
	if [ $$n -eq 0 ]; then echo "fuzz: no fuzz targets found"; exit 1; fi; \
	echo "fuzz: $$n targets fuzzed for $(FUZZTIME) each"; \
	if [ -n "$$raced" ]; then echo "fuzz: WARNING: stopped twice by the coordinator's deadline race, with no input found:$$raced"; fi

demo: build
	./scripts/demo.sh

# Interoperability with upstream SPIRE (the version pinned in
# test/interop/go.mod), not part of `make test`: the first run builds
# SPIRE's binaries from the Go module proxy (minutes) and caches them in
# test/interop/.bin.
interop: build
	cd test/interop && SPIRE_HW_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -timeout 30m ./...

# Rebuilds the committed eBPF objects; needs Debian's clang, llvm and
# libbpf-dev (go build and go test do not).
generate:
	cd ebpf/lineage && $(GO) generate ./

# bench runs every benchmark report at full size (BENCH_REPORT=1: the
# report tests write bench/RESULTS-*.md and plots) and gathers them into
# bench/RESULTS.md. `make test` runs the same harnesses at tiny sizes.
bench: deps
	BENCH_REPORT=1 REQUIRE_SIM=$(REQUIRE_SIM) $(GO) test -p 1 -count=1 -timeout 60m -run 'Test' ./bench/...
	$(GO) run ./bench/results bench

# bench-peer compares ours with upstream SPIRE (pinned in bench/peer/go.mod)
# and writes bench/RESULTS-peer.md and its plots, then regathers
# bench/RESULTS.md. bench/peer builds SPIRE once into bench/peer/.bin,
# copying test/interop's cache when it holds the same release. About 50
# minutes; not part of `make test` or `make bench`, which run the same
# harness against our binaries alone at tiny sizes.
bench-peer: build
	@peer=$$(cd bench/peer && $(GO) run . -seed $(CURDIR)/test/interop/.bin) && \
	BENCH_REPORT=1 BENCH_PEER_BIN=$$peer BENCH_OURS_BIN=$(CURDIR)/$(BIN) \
		$(GO) test -p 1 -count=1 -v -timeout 120m -run '^TestPeer$$' ./bench/compare
	$(GO) run ./bench/results bench

# dist writes the release tarball (laid out as SPIRE's, with the systemd
# units) and a Debian package to dist/; VERSION= overrides git describe.
dist:
	./scripts/dist.sh dist

demo-tpm: build
	./scripts/demo-tpm.sh

# demo-docker runs a workload in a container of a private dockerd and shows
# the SVID its label earns it (root and docker.io; make deps installs it).
demo-docker: deps build
	./scripts/demo-docker.sh

# demo-federation runs two servers in two trust domains, federated over
# https_spiffe, an agent each, and a cross-domain mTLS handshake between
# their workloads (go-spiffe); it removes everything on exit.
demo-federation: build
	./scripts/demo-federation.sh

# make demo-attest PROVIDER=aws|azure|gcp|k8s|x509pop|sshpop runs an agent
# "on" a local simulator of that platform.
demo-attest: build
	./scripts/demo-attest.sh $(PROVIDER)

$(STATICCHECK):
	cd /tmp && GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

clean:
	rm -rf $(BIN)
