# The two commands of the README are `make dev` and `make test`; the rest are their parts.
.PHONY: help dev test stack-up stack-down stack-status build image lint bench chaos clean

help: ## This list.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

dev: ## Stack, topics, schemas, migrations, processors and a demo; Ctrl-C stops it all.
	dev/setup.sh
	dev/dev.sh

test: ## Every check CI runs (fmt, clippy, unit and integration tests on the real stack).
	dev/test.sh

stack-up: ## Start Kafka, Cassandra, Apicurio and the SMTP server (fetches them once).
	dev/stack.sh up

stack-down: ## Stop what stack-up started.
	dev/stack.sh down

stack-status: ## Which parts of the stack run, and their ports.
	dev/stack.sh status

build: ## The release `notify` binary (target/release/notify).
	cargo build --release --bin notify

image: ## The container image (Dockerfile) with docker, podman or buildah, where one works.
	dev/image.sh

bench: ## Benchmarks on the local stack: writes BENCHMARKS.md and bench/*.png (BENCH_ARGS="--records N").
	dev/bench.sh $(BENCH_ARGS)

chaos: ## Every fault scenario at full length; writes RELIABILITY.md (NOTIFY_CHAOS_SCALE=N, CHAOS_RELEASE=1).
	dev/chaos.sh

lint: ## cargo fmt --check and clippy with warnings as errors.
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean: stack-down ## Stop the stack and delete .run (its data).
	rm -rf .run
