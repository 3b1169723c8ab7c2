# Two commands for a newcomer (see README.md):
#   make demo   set everything up, then run the main job on an analyst scene
#   make test   set everything up, then run the test suite
# Both create .venv when it is missing and install the pinned dependencies into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch and torchvision must always be pinned together in every pip command (see README).
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
OUT    ?= demo-output

# Nothing may try the network for model weights; a hub miss would otherwise retry for minutes.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup web demo test test-all lint browser clean

setup: $(STAMP) web

# The web workspace's viewer library (OpenSeadragon) comes from the npm registry at build time: `npm ci`
# installs exactly what package-lock.json pins, and its dist files are copied into the package's static
# folder (ignored by git; served locally by `rsrag serve`, nothing is fetched when the page runs).
WEB_STATIC := agent/interfaces/web/static
WEB_LIB    := $(WEB_STATIC)/openseadragon.min.js
OSD_DIST   := node_modules/openseadragon/build/openseadragon

web: $(WEB_LIB)

$(WEB_LIB): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm (Node.js 20 or newer) is needed to bundle the web viewer library; install Node.js and re-run make"; exit 2; }
	npm ci --no-audit --no-fund --loglevel=error
	rm -rf $(WEB_STATIC) && mkdir -p $(WEB_STATIC)
	cp $(OSD_DIST)/openseadragon.min.js $(WEB_STATIC)/
	cp node_modules/openseadragon/LICENSE.txt $(WEB_STATIC)/openseadragon.LICENSE.txt

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH) -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# The main job (demo/analyst_demo.py): without SAMPLE, an analyst scene built once from the validation chips of
# ../shared/data/aid-rsicd (storage tanks at 3 sites, an airport at 2), described, indexed and asked a short
# conversation; answers in $(OUT)/answers.json, the audit trace in $(OUT)/trace.html.
# Any image and question: make demo SAMPLE=scene.tif QUESTION="where are the storage tanks?" [TILING=vit:448]
SAMPLE   ?=
QUESTION ?=
TILING   ?=

demo: setup
	$(BIN)/python demo/analyst_demo.py --out $(OUT) $(if $(SAMPLE),--image "$(SAMPLE)") \
	  $(if $(QUESTION),--question "$(QUESTION)") $(if $(TILING),--tiling "$(TILING)")

# Browser tests drive Debian's chromium; install it when missing and possible (they skip, saying why, if not).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) ; } || \
	  echo "note: chromium is not installed; browser tests will be skipped"

# ruff (rules in pyproject.toml) and mypy; mypy checks the rsrag.* packages through links in build/typecheck/rsrag
# (pyproject maps the folders to rsrag.* with package-dir, which mypy cannot follow)
TYPECHECK := build/typecheck
lint: $(STAMP)
	$(BIN)/ruff check agent tools graphs prompts tests benchmarks
	mkdir -p $(TYPECHECK)/rsrag
	for p in agent tools graphs prompts; do ln -sfn ../../../$$p $(TYPECHECK)/rsrag/$$p; done
	cd $(TYPECHECK) && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p rsrag.agent -p rsrag.tools -p rsrag.graphs -p rsrag.prompts

test: setup browser
	$(BIN)/python -m pytest -q

test-all: setup browser
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info node_modules $(WEB_STATIC)
