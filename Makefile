# The two commands of the README are `make dev` and `make test`; the rest are their parts.
.PHONY: dev test stack-up stack-down stack-status build image lint bench chaos clean

dev: ## Stack, topics, schemas, migrations, processors and a demo; Ctrl-C stops it all.
	dev/setup.sh
	dev/dev.sh

test: ## Every check CI runs (fmt, clippy, unit and integration tests on the real stack).
	dev/test.sh

stack-up: ## Start Kafka, Cassandra, Apicurio and the SMTP server (fetches them once).
	dev/stack.sh up

stack-down: ## Stop what stack-up started.
	dev/stack.sh down

stack-status:
	dev/stack.sh status

build:
	cargo build --release --bin notify

image: ## The container image (Dockerfile) with docker, podman or buildah, where one works.
	dev/image.sh

bench: ## Benchmarks on the local stack: writes BENCHMARKS.md and bench/*.png (BENCH_ARGS="--records N").
	dev/bench.sh $(BENCH_ARGS)

chaos: ## Every fault scenario at full length; writes RELIABILITY.md (NOTIFY_CHAOS_SCALE=N, CHAOS_RELEASE=1).
	dev/chaos.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean: stack-down
	rm -rf .run
