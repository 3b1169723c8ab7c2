# Two commands for a newcomer (see README.md):
#   make demo   set everything up, then run the main job on the sample scene
#   make test   set everything up, then run the test suite
# Both create .venv when it is missing and install the pinned dependencies into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch and torchvision must always be pinned together in every pip command (see README).
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
SAMPLE ?= ../shared/data/geotiff/RGB.byte.tif
OUT    ?= demo-output

# Nothing may try the network for model weights; a hub miss would otherwise retry for minutes.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-all browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH) -c requirements.lock -e '.[dev]'
	touch $(STAMP)

QUESTION ?= where are the clouds?
# 128 px windows with overlap: the 791 x 718 px sample gives ~140 patches (a 448 px grid would give 4)
TILING ?= grid:128:overlap=0.5

demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/rsrag describe $(SAMPLE) --thumbnail $(OUT)/thumbnail.png
	$(BIN)/rsrag index $(SAMPLE) --store $(OUT)/store --tiling $(TILING)
	$(BIN)/rsrag ask $(SAMPLE) "$(QUESTION)" --store $(OUT)/store --tiling $(TILING)
	$(BIN)/rsrag ask $(SAMPLE) "$(QUESTION)" --store $(OUT)/store --tiling $(TILING) --json > $(OUT)/answer.json
	@echo "answer with cited evidence: $(OUT)/answer.json"

# Browser tests drive Debian's chromium; install it when missing and possible (they skip, saying why, if not).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) ; } || \
	  echo "note: chromium is not installed; browser tests will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
