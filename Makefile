# The two commands a newcomer needs:
#   make run    set up what is missing, start the stack, run both services (Ctrl-C stops them)
#   make test   set up what is missing, start the stack, run the whole test suite
.PHONY: run test fuzz fuzz-seeds bench bench-forwarder stack-up cluster-up stack-down stack-status stack-clean lint fmt build

CARGO ?= cargo

run: stack-up
	$(CARGO) build --bins
	@bash stack/run.sh

test: stack-up cluster-up
	@bash stack/sdks.sh
	@rm -rf "$${TMPDIR:-/tmp}/cyclops-tests"  # the spools earlier test runs left
	$(CARGO) test --workspace --all-targets

# Runs every fuzz target (fuzz/) for FUZZ_SECONDS (45) each; CI runs it.
fuzz:
	@bash stack/fuzz.sh

# Writes the fuzz seeds (fuzz/seeds/) from what the real SDKs send in the tests.
fuzz-seeds: stack-up
	@bash stack/sdks.sh
	CYCLOPS_FUZZ_SEEDS=$(CURDIR)/fuzz/seeds $(CARGO) test -p cyclops-tests --test e2e sdks::

# Load benchmark of ingest (prints a table; not part of `make test`).
# Each run writes gigabytes to Kafka: the bench-* topics are deleted when it
# ends, passed, failed or interrupted (so do not run the two benchmarks at once: each deletes the other's topics).
bench: stack-up cluster-up
	@trap "bash stack/stack.sh delete-topics 'bench-.*'; KAFKA_PORT=$${KAFKA_CLUSTER_PORT:-19092} bash stack/stack.sh delete-topics 'bench-.*'" EXIT; \
	  trap 'exit 130' INT TERM; \
	  $(CARGO) bench -p cyclops-ingest --bench load

# Delivery benchmark of the forwarder (prints a table; not part of `make test`).
bench-forwarder: stack-up
	@trap "bash stack/stack.sh delete-topics 'bench-.*'" EXIT; trap 'exit 130' INT TERM; \
	  $(CARGO) bench -p cyclops-forwarder --bench deliver

# Stop the stack and delete Kafka's data (tests and benchmarks leave topics).
stack-clean:
	@bash stack/stack.sh clean

stack-up:
	@bash stack/stack.sh up

# The replicated 3-node cluster (SASL_SSL beside plaintext) the failure tests run on.
cluster-up:
	@bash stack/stack.sh cluster-up

stack-down:
	@bash stack/stack.sh down

stack-status:
	@bash stack/stack.sh status

build:
	$(CARGO) build --workspace --all-targets

# fmt, clippy (clippy.toml's bans), rustdoc, unused dependencies, cargo deny: see stack/lint.sh.
lint:
	@bash stack/lint.sh

fmt:
	$(CARGO) fmt --all
