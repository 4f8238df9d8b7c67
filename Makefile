# The two commands a new machine needs: `make demo` and `make test`. Everything else they need,
# they install: uv into .tools/, the locked dependencies into .venv/, Debian packages for tests.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv
# Machines here set PYTHONDONTWRITEBYTECODE, so nothing is compiled on first use: without this,
# every `digest` command compiled every module it imports again (about 2 s of each command).
export UV_COMPILE_BYTECODE := 1
# For the same reason the suite writes its bytecode: each of the four test workers compiled every
# test module and rewrote its assertions again (4 s of CPU a worker, about 50 s of the suite's CPU
# with the subprocesses that import tests/support or tests/fakes; measured 4:58 against 4:32).
export PYTHONDONTWRITEBYTECODE :=

.PHONY: setup demo test check lint typecheck bench system-deps clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --python $(PYTHON)
	.venv/bin/python -m compileall -q digest flows
	touch $@

setup: .venv/.synced

demo: setup
	.venv/bin/digest demo

system-deps:
	bash scripts/install-system-deps.sh

# Four workers on two cores: most tests wait on a server, a process or a timeout much of the time.
# The type check runs beside them, its report printed after theirs (on a fresh clone it takes
# about 20 s, which the tests' waits absorb); either failing fails the target.
test: setup system-deps lint
	@echo "mypy runs beside the tests; its report follows theirs"
	@log=$$(mktemp); .venv/bin/mypy > $$log 2>&1 & types=$$!; \
	.venv/bin/python -m pytest -n 4; tests=$$?; \
	wait $$types; typed=$$?; echo "--- .venv/bin/mypy"; cat $$log; rm -f $$log; \
	test $$tests -eq 0 && test $$typed -eq 0

# The quick loop while working: everything but the slow, browser and real-server tests.
check: lint typecheck
	.venv/bin/python -m pytest -n 4 -m "not slow and not browser" -x -q

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

typecheck: setup
	.venv/bin/mypy

# The figures in docs/benchmarks.md; about 20 minutes on the 2-core machine, best run quiet.
bench: setup
	.venv/bin/python bench/bench_send.py --sizes 1000,100000,1000000
	.venv/bin/python bench/bench_import.py
	.venv/bin/python bench/bench_pairing.py
	.venv/bin/python bench/bench_matching.py
	.venv/bin/python bench/bench_commands.py
	.venv/bin/python bench/bench_votes.py
	.venv/bin/python bench/bench_votes.py --postgres

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache test-artifacts
