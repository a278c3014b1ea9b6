# The two set-up commands, `make demo` and `make test`, install what they need (Debian packages,
# npm packages) and can be run again at any time.
SHELL := /bin/bash
APT_PACKAGES := clang llvm libbpf1 libbpf-dev bpftool iproute2 ethtool tcpdump util-linux
DEPS_STAMP := node_modules/.xdpvs-deps
# what `make bench` adds: the load generator and the user-space balancer it compares with
BENCH_PACKAGES := wrk haproxy

.PHONY: deps build test demo bench install clean

deps: $(DEPS_STAMP)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(DEPS_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

build: deps
	npx tsc -p tsconfig.json

test: build
	npx tap

demo: build
	node dist/lab/demo.js

bench: build
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the benchmarks: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	node dist/bench/main.js

install: build
	ln -sf $(CURDIR)/bin/xdpvs /usr/local/bin/xdpvs
	@echo "xdpvs -> $(CURDIR)/bin/xdpvs"

clean:
	rm -rf dist build .tap
