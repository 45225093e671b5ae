# make test | make demo | make lint | make bench   (the first run creates .venv and installs the pins, ~5 min)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python
DEMO := results/demo

.PHONY: install install-gpu test lint demo bench check-gpu-resolution clean-demo

$(VENV)/.installed: requirements.txt requirements-nodeps.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	touch $@

install: $(VENV)/.installed

install-gpu: install
	$(BIN)/python -m kit.doctor || true
	$(BIN)/pip install -r requirements.txt -r requirements-gpu.txt
	$(BIN)/python -m kit.doctor

test: install
	$(RUN) -m pytest -q tests

# ruff (pinned in requirements-dev.txt, configured in pyproject.toml) and the shape targets
lint: install
	$(BIN)/ruff check .
	$(BIN)/python tools/code_shape.py

# The whole pipeline on the bundled tiny setup: every stage's real code, tiny random weights.
demo: install
	$(RUN) -m kit.tiny --out $(DEMO)/models
	$(RUN) filter_data.py --input data/sample_magpie.jsonl --output $(DEMO)/filtered.jsonl \
		--rare_char_max_count -1 --second_pass_rare_char_max_count -1
	$(RUN) train.py --config configs/tiny_cpu.yaml --results_dir $(DEMO)/runs --val_size 4 \
		--report_to none --overwrite
	$(RUN) infer.py --model $(DEMO)/models/tiny-gemma2 \
		--adapter $(DEMO)/runs/r8-a16-lr0.01-s120-alpaca_ja/adapter \
		--tasks data/sample_tasks.jsonl --reference data/sample_reference_qa.jsonl --k 3 \
		--retriever colbert --retriever_model $(DEMO)/models/tiny-colbert \
		--max_new_tokens 48 --ban "###" --ban "質問" --results_dir $(DEMO)/runs \
		--output $(DEMO)/output.jsonl
	$(RUN) infer.py validate --tasks data/sample_tasks.jsonl --output $(DEMO)/output.jsonl
	$(RUN) infer.py --config configs/score_dev.yaml --judge configs/score_dev.yaml \
		--model $(DEMO)/models/tiny-gemma2 --adapter $(DEMO)/runs/r8-a16-lr0.01-s120-alpaca_ja/adapter \
		--results_dir $(DEMO)/runs --output $(DEMO)/runs/r8-a16-lr0.01-s120-alpaca_ja/dev_output.jsonl
	$(RUN) -m kit.trials $(DEMO)/runs
	$(RUN) quantize_push.py --model $(DEMO)/models/tiny-gemma2 \
		--adapter $(DEMO)/runs/r8-a16-lr0.01-s120-alpaca_ja/adapter \
		--output $(DEMO)/models/tiny-gemma2-merged-bnb-4bit --overwrite
	@echo "demo: output.jsonl for submission in $(DEMO)/output.jsonl; the run scored on the dev" \
		"tasks in $(DEMO)/runs/TRIALS.md; merged 4-bit model with its model card in" \
		"$(DEMO)/models/tiny-gemma2-merged-bnb-4bit"
	@echo "demo: every model here is tiny and random: its answers are babble (often U+FFFD) and" \
		"its scores mean nothing; the demo shows that every stage runs, not what they produce"

bench: install
	$(RUN) bench/bench_filter.py
	$(RUN) bench/bench_infer.py
	$(RUN) bench/bench_judge.py

# Resolve requirements.txt + requirements-gpu.txt for Linux x86_64, Python 3.11 and 3.12, from
# package metadata alone. unidic-lite ships only an sdist (pip can't use one for another platform);
# it is dependency-free data, so it is left out. MIRROR_GAPS: CUDA libraries that torch's CUDA
# wheel pins and this machine's registry mirror lacks; empty stand-ins let the resolver check the
# rest (on PyPI pip prefers the real, platform-specific wheels).
MIRROR_GAPS := nvidia-nccl-cu13==2.29.7 nvidia-cuda-cupti==13.0.85
check-gpu-resolution: install
	grep -v '^unidic-lite' requirements.txt > /tmp/kit-requirements-cpu.txt
	$(BIN)/python tools/stub_wheels.py /tmp/kit-stub-wheels $(MIRROR_GAPS) > /dev/null
	for py in 3.11 3.12; do \
		$(BIN)/pip install --dry-run --quiet --ignore-installed --only-binary=:all: \
			--python-version $$py $(foreach n,17 24 27 28 31 34 35,--platform manylinux_2_$(n)_x86_64) \
			--platform manylinux2014_x86_64 --platform linux_x86_64 --target /tmp/kit-gpu-resolution \
			--find-links /tmp/kit-stub-wheels -r /tmp/kit-requirements-cpu.txt -r requirements-gpu.txt \
			&& echo "GPU extras resolve with the pins (Python $$py)" || exit 1; \
	done

clean-demo:
	rm -rf $(DEMO)
