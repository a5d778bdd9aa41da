# vxsec build and test entry points. Every target installs what it needs.
GO        ?= go
BIN       := bin/vxsec
# The same daemon with test hooks (cmd/vxsec/clock_testhooks.go), for the
# integration tests only: never packaged.
HOOKED    := bin/vxsec-hooked
VXLAB     := bin/vxlab
GOFLAGS_B := -trimpath -tags nosystemd
# The Docker engines `make bench` times `docker run` on (scripts/lib.sh).
BENCH_ENGINES ?= 20.10 28
# Where vxlab bench writes its raw figures (JSON) for vxlab report, and
# where the report (Markdown and SVG plots) goes.
BENCH_RESULTS ?= build/bench
BENCH_REPORT  ?= docs/bench
# How long `make fuzz` fuzzes each target.
FUZZTIME  ?= 3s
export CGO_ENABLED := 0

.PHONY: all build vxlab unit fuzz integration adversarial e2e kernel-lab test plugin demo bench bench-report lint clean

all: build

build:
	$(GO) build $(GOFLAGS_B) -ldflags "-s -w -X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o $(BIN) ./cmd/vxsec
	$(GO) build -trimpath -tags 'nosystemd testhooks' -ldflags "-s -w -X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)-testhooks" -o $(HOOKED) ./cmd/vxsec

# The lab CLI: multi-host demo and benchmarks in network namespaces.
vxlab:
	$(GO) build $(GOFLAGS_B) -o $(VXLAB) ./cmd/vxlab

# Unit tests (the xfrm policy test needs root; everything else does not).
# The attacks (TestAttack*) are their own tier: adversarial.
unit:
	$(GO) test -tags nosystemd -count=1 -skip '^TestAttack' ./...

# Every fuzz target of the module, FUZZTIME each; a failing input is left in
# the package's testdata/fuzz (the unit tests then run it).
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

# Root integration tests: daemons in network namespaces, driven through the remote API.
integration: build
	$(GO) test -tags 'nosystemd integration' -count=1 -p 1 -v -timeout 15m -skip '^TestAttack' ./lab/... ./vip/... ./test/integration/...

# The attacks: every TestAttack* test, in-process and on daemons in network
# namespaces (plain networks; the encrypted ones run in kernel-lab). Each
# must pass: the script counts them against their definitions.
adversarial: build
	GO=$(GO) scripts/adversarial.sh

# End-to-end with the real Docker engine and the real managed plugin.
e2e: build
	scripts/e2e.sh

# Encrypted networks on a kernel with ESP and GCM: test binaries built here,
# run inside the kernel lab's VM (Debian's kernel under qemu).
kernel-lab:
	mkdir -p build/kernellab
	$(GO) test -c -tags 'nosystemd kernellab' -o build/kernellab/ipsec.test ./ipsec
	$(GO) test -c -tags 'nosystemd integration kernellab' -o build/kernellab/integration.test ./test/integration
	scripts/kernel-lab.sh --timeout 1500 -- sh -c \
		'build/kernellab/ipsec.test -test.run "^(TestESPDataPath|TestPolicies|TestForeignSA)$$" -test.v -test.count=1 && \
		 cd test/integration && ../../build/kernellab/integration.test -test.run "^TestEncrypted" -test.v -test.count=1 -test.timeout 20m'

# Everything, as CI runs it: installs packages, runs every tier, reports each loudly.
test:
	scripts/test.sh

# Build the managed plugin and enable it in the local Docker engine (main job).
plugin: build
	scripts/plugin.sh

# The main job: a three-host vxsec cluster on this machine (hosts as network
# namespaces), traffic across it, a host failing and returning, torn down.
demo: build vxlab
	scripts/demo.sh

# Benchmarks (not tests): a receiver's driver work per remote change by
# cluster size and the firewall's check at every Join (Go benchmarks), Docker `docker run` timings, then the lab's
# convergence, scale and throughput. VXLAB_BENCH passes flags to vxlab bench.
# Encryption needs ESP: it runs in the kernel lab (TCG, so read its ratios).
# The swarm lab's benchmark: service create to full reachability, vxsec
# against Docker's encrypted overlay (SWARM_LAB_BENCH="--runs 5" for more).
# Last, the report: $(BENCH_REPORT)/README.md with SVG plots, from every
# result on disk (the encryption results come out of the VM through the
# kernel lab's export).
bench: build vxlab
	mkdir -p $(BENCH_RESULTS)
	$(GO) test ./driver -run '^$$' -bench RemoteChange -benchtime 2000x > $(BENCH_RESULTS)/driver-remote-change.txt && cat $(BENCH_RESULTS)/driver-remote-change.txt
	$(GO) test ./firewall -run '^$$' -bench ApplyUnchanged -benchtime 2000x > $(BENCH_RESULTS)/firewall-apply.txt && cat $(BENCH_RESULTS)/firewall-apply.txt
	for e in $(BENCH_ENGINES); do VXSEC_ENGINE=$$e scripts/bench.sh || exit 1; done
	$(VXLAB) bench -results $(BENCH_RESULTS) $(VXLAB_BENCH)
	scripts/kernel-lab.sh --timeout 1800 --results $(BENCH_RESULTS) -- \
		$(VXLAB) bench -only encryption -results /run/kernel-lab/out/results $(VXLAB_BENCH_ENC)
	BENCH_RESULTS=$(BENCH_RESULTS) scripts/swarm-lab.sh --bench $(SWARM_LAB_BENCH)
	$(VXLAB) report -results $(BENCH_RESULTS) -swarm $(BENCH_RESULTS)/swarm-bench.tsv -out $(BENCH_REPORT)

# The report again from the results on disk (after one benchmark rerun).
bench-report: vxlab
	$(VXLAB) report -results $(BENCH_RESULTS) -swarm $(BENCH_RESULTS)/swarm-bench.tsv -out $(BENCH_REPORT)

lint:
	@u=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$u" || { echo "gofmt wants to rewrite: $$u"; exit 1; }
	$(GO) vet -tags 'nosystemd integration e2e' ./...
	$(GO) vet -tags 'nosystemd testhooks' ./cmd/vxsec/
	$(GO) vet -tags 'nosystemd integration kernellab' ./...
	$(GO) vet -tags 'nosystemd swarmlab' ./test/swarm/ ./lab/

clean:
	rm -rf bin build
