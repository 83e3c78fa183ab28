# make install : .venv/ with pinned deps (idempotent: re-runs only when requirements.txt changes)
# make demo    : demo data -> tiny base model -> SFT -> eval -> RL -> eval, on CPU (~7 min on 2 cores)
# make test    : fast CPU test suite
PY      := .venv/bin/python
STAMP   := .venv/.installed
TORCH   ?= torch==2.13.0
DEMO    ?= demo_run

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	bash demo.sh $(DEMO)

test: $(STAMP)
	$(PY) -m pytest -q -x tests

clean:
	rm -rf $(DEMO)
