# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# PyTorch builds pinned for this kind of machine (see README: other machines).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast lint bench mutation clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/shortvid demo

# Tests run on pytest-xdist workers, one a core, each test module on one worker (its module fixtures made
# once); `make test WORKERS=0` runs them in this process. test-fast leaves out the tests marked slow.
WORKERS ?= auto
PYTEST := $(BIN)/pytest -q -n $(WORKERS) --dist loadfile

test: install
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

# ruff (pyproject.toml [tool.ruff]): what .ci/run checks before the tests.
lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/decode.py --variants --peers
	$(BIN)/python bench/decode.py --corpus realistic-540 --variants --peers
	$(BIN)/python bench/decode.py --corpus bench --variants --peers
	$(BIN)/python bench/decode.py --corpus real-shaped --videos 25
	$(BIN)/python bench/predict.py --backends torch,onnx
	$(BIN)/python bench/predict.py --corpus real-shaped --videos 25 --repeats 4 --backends torch,onnx --no-seed
	$(BIN)/python bench/pipeline.py --corpus real-shaped --videos 50 --compare-spinning
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/serve.py --corpus real-shaped --videos 25 --requests 240 --concurrency 1,8,16,32
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/ort_options.py --rounds 8
	$(BIN)/python bench/torch_options.py
	$(BIN)/python bench/students.py --time
	$(BIN)/python bench/frame_policy.py
	$(BIN)/python bench/frame_policy.py --gop 300
	$(BIN)/python bench/motion.py --videos 25 --repeats 3
	$(BIN)/python bench/motion.py --corpus realistic-540 --videos 24 --repeats 2
	$(BIN)/python bench/audio.py --videos 25 --repeats 3
	$(BIN)/python bench/senses.py --videos 25 --repeats 4 --cpu-repeats 2 --passes 5
	$(BIN)/python bench/fuzz.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/overload.py --baseline-rev 02b7e70
	$(BIN)/python bench/overload.py --model seed --budgets 1 --baseline-rev 02b7e70
	$(BIN)/python bench/uploads.py --baseline-rev 02b7e70
	$(BIN)/python bench/connections.py
	$(BIN)/python bench/connections.py --server-fd-limit 1024 --requests 2
	$(BIN)/python bench/reload.py
	$(BIN)/python bench/ray_engine.py
	$(BIN)/python bench/ddp.py --repeats 3

# Mutation testing of the code that guards users (docs/testing.md; not part of `make test` or CI).
# MUTANTS: mutmut names (globs) of the functions whose mutants run; `?` stands for mutmut's "ǁ".
MUTANTS ?= shortvid.decode.options.x?DecodeLimits?* shortvid.decode.decoder.x?_Reader?_check_* \
	shortvid.decode.decoder.x?_Reader?_tune__* shortvid.data.sources.* shortvid.serve.admission.* \
	shortvid.serve.requests.*
# Killed / generated per module (of the functions MUTANTS picked), then each mutant a test reached and did not kill.
define MUTATION_REPORT
import collections, glob, json
from mutmut.stats import status_by_exit_code
tally, survivors = collections.defaultdict(collections.Counter), []
for meta in sorted(glob.glob("mutants/shortvid/**/*.py.meta", recursive=True)):
    for name, code in json.load(open(meta))["exit_code_by_key"].items():
        status = status_by_exit_code[code]
        if status != "not checked":
            module = name.split(".x")[0]
            tally[module][status] += 1
            survivors += [f"{status}: {name}"] if status not in ("killed", "timeout", "no tests") else []
for module, counts in sorted(tally.items()):
    tested = sum(counts.values())
    caught = counts["killed"] + counts["timeout"]  # a mutant that makes a test hang is caught too
    print(f"{module}: {caught}/{tested} caught ({100 * caught / tested:.1f}%) {dict(counts)}")
print(*survivors, sep="\n")
endef
export MUTATION_REPORT

mutation: install
	rm -rf mutants
	$(BIN)/mutmut run $(foreach name,$(MUTANTS),'$(name)')
	$(BIN)/python -c "$$MUTATION_REPORT"

clean:
	rm -rf $(VENV) runs
