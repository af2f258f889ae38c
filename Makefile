# nalox: one Makefile for a fresh Debian machine. Every target sets up what it needs, idempotently.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# kiosk: espeak-ng speaks the screens; fonts-wqy-microhei draws Chinese and Korean; xvfb, tesseract-ocr(-spa)
# and sox check the real screens and speech in tests
KIOSK_APT := espeak-ng fonts-dejavu-core fonts-wqy-microhei xvfb tesseract-ocr tesseract-ocr-spa sox
APT_PACKAGES := $(KIOSK_APT) mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev gcc libc6-dev mpv ffmpeg chromium openssl systemd udev wrk curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages node-packages test lint demo bench bench-fleet bench-scale soak fleet-soak fuzz clean

setup: system-packages node-packages $(STAMP)

# apt only when a package is missing, so a second run touches nothing
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# MicroPython's own WebAssembly port for the firmware tests (package.json pins it, package-lock.json
# is committed); npm ci only when the lock file is newer than what node_modules holds.
node-packages: system-packages
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; }
	@[ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy --strict controller schemas firmware_py  # firmware's MicroPython code: plain style (pyproject)
	$(BIN)/mypy simulator inventory nalox bench

demo: setup
	$(BIN)/nalox demo $(DEMO_ARGS)

bench: setup
	$(BIN)/python -m bench.run

# units per core alone (also part of make bench; QUICK=1 for the short ramp)
bench-fleet: setup
	$(BIN)/python -m bench.fleet $${QUICK:+--quick}

# the central service at state scale on PostgreSQL (loads once, then reuses the schema; see bench/scale.py)
SCALE_UNITS ?= 2000
SCALE_EVENTS ?= 10000000
bench-scale: setup
	$(BIN)/python -m bench.scale --units $(SCALE_UNITS) --events $(SCALE_EVENTS) $(SCALE_ARGS)

soak: setup
	$(BIN)/python -m nalox.soak --presses $${PRESSES:-10000} --seed $${SEED:-1} $(SOAK_ARGS)

# a state's fleet: 1,000 simulated units (several processes) against central on PostgreSQL for ten minutes,
# then every unit counted three ways (board, ledger, central); FLEET_ARGS="--units 200 --duration 60" etc.
fleet-soak: setup
	$(BIN)/python -m nalox.fleetsoak --summary bench/fleet_soak.json $(FLEET_ARGS)

# atheris, 10^6 executions per target (deframer, codec, MQTT payload validation): about half an hour
fuzz: setup
	$(BIN)/python -m bench.fuzz all --runs $${FUZZ_RUNS:-1000000}
	NALOX_OPENAPI_EXAMPLES=$${OPENAPI_EXAMPLES:-100} $(BIN)/python -m pytest -q -p no:cacheprovider tests/inventory/test_openapi_fuzz.py

clean:
	rm -rf $(VENV) node_modules build *.egg-info .pytest_cache .mypy_cache .ruff_cache
