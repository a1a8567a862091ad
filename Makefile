# The two set-up commands of a fresh machine are `make demo` and `make test` (see README.md).
SHELL := bash
.PHONY: demo test bench

demo:
	./nats/demo.sh

test:
	./nats/provision.sh >/dev/null
	./tests/provision.sh
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo build --workspace --bins --quiet
	mkdir -p target
	set -o pipefail; cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log; status=$$?; \
	  python="$$(./clients/python/provision.sh)" && PYTHONDONTWRITEBYTECODE=1 "$$python" -m pytest -q \
	    -p no:cacheprovider clients/python/tests 2>&1 | tee target/pytest.log; pystatus=$$?; \
	  awk '/^test result:/ {p+=$$4; f+=$$6} \
	    FILENAME ~ /pytest/ && / in [0-9.]+s/ {for (i = 2; i <= NF; i++) {if ($$i ~ /^passed/) p+=$$(i-1); if ($$i ~ /^(failed|errors?)/) f+=$$(i-1)}} \
	    END {printf "tests: %d passed, %d failed\n", p, f}' target/test.log target/pytest.log; \
	  [ $$status -eq 0 ] && [ $$pystatus -eq 0 ]

bench:
	./nats/provision.sh >/dev/null
	./benches/provision.sh
	cargo bench -p mycosynth-benches --features etcd
