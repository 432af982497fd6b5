# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# PyTorch builds pinned for this kind of machine (see README: other machines).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/shortvid demo

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/decode.py --variants --peers
	$(BIN)/python bench/decode.py --corpus realistic-540 --variants --peers
	$(BIN)/python bench/decode.py --corpus real-shaped --videos 25
	$(BIN)/python bench/predict.py --backends torch,onnx
	$(BIN)/python bench/predict.py --corpus real-shaped --videos 25 --repeats 4 --backends torch,onnx --no-seed
	$(BIN)/python bench/pipeline.py --corpus real-shaped --videos 50 --compare-spinning
	$(BIN)/python bench/serve.py --corpus real-shaped --videos 25 --concurrency 1,8,16,32
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/ort_options.py
	$(BIN)/python bench/torch_options.py
	$(BIN)/python bench/overlap.py
	$(BIN)/python bench/students.py --time
	$(BIN)/python bench/fuzz.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/overload.py
	$(BIN)/python bench/overload.py --model seed
	$(BIN)/python bench/ray_engine.py
	$(BIN)/python bench/ddp.py

clean:
	rm -rf $(VENV) runs
