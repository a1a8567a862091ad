# The two set-up commands of a fresh machine are `make demo` and `make test` (see README.md).
SHELL := bash
.PHONY: demo test bench

demo:
	./nats/demo.sh

test:
	./nats/provision.sh >/dev/null
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo build --workspace --bins --quiet
	mkdir -p target
	set -o pipefail; cargo test --workspace 2>&1 | tee target/test.log; status=$$?; \
	  awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/test.log; \
	  exit $$status

bench:
	./nats/provision.sh >/dev/null
	./benches/provision.sh
	cargo bench -p mycosynth-benches --features etcd
