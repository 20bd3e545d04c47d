# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
## The CJK font the PDFs embed (Debian's fonts-wqy-zenhei), installed with apt if missing: a file
## target, so that `make -q install` tells whether anything is left to install. Named before the
## rules that need it: make expands a rule's prerequisites as it reads the rule.
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc

.PHONY: install fonts demo test lint format bench clean messages compile-messages

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) $(CJK_FONT)

fonts: $(CJK_FONT)

$(CJK_FONT):
	@if command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y fonts-wqy-zenhei || { $$SUDO apt-get update && $$SUDO apt-get install -y fonts-wqy-zenhei; }; \
	else echo "Install a CJK font for the PDFs: Debian's fonts-wqy-zenhei." >&2; exit 1; fi

## Start the service with demo data on the embedded PostgreSQL and broker (no servers).
demo: $(STAMP) $(CJK_FONT)
	scripts/demo.sh

## Lint, type-check, check migrations and run the tests on PostgreSQL and Redis.
test: $(STAMP) $(CJK_FONT)
	scripts/test.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

I18N_SETTINGS := DJANGO_SETTINGS_MODULE=config.settings.test
## Update the Simplified Chinese catalog from the code and templates (needs GNU gettext), then translate
## every empty msgstr in locale/zh_Hans/LC_MESSAGES/django.po and run `make compile-messages`.
messages: $(STAMP)
	$(I18N_SETTINGS) $(PY) manage.py makemessages -l zh_Hans --no-obsolete --no-location \
	  --ignore=.venv --ignore=tests --ignore=bench --ignore=scripts --ignore=var --ignore=staticfiles

## Compile the catalog into django.mo, which is committed: the service and the tests need no gettext.
compile-messages: $(STAMP)
	$(I18N_SETTINGS) $(PY) manage.py compilemessages -l zh_Hans --ignore=.venv

clean:
	rm -rf var staticfiles .pytest_cache .mypy_cache .ruff_cache
