# edgebench: one command to set up, one to test, one for the demo. Every target does its own setup.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LEGACY := .venv-legacy
STAMP := $(VENV)/.setup-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
APT_PACKAGES := adb openssh-server iproute2 nftables dataset-fashion-mnist chromium fortunes postgresql
export TF_CPP_MIN_LOG_LEVEL := 3
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup apt venv test test-fast test-devices demo bench protos lint clean

setup: apt $(STAMP)

# System packages the tests need (real adb client, sshd, network namespaces, Fashion-MNIST, headless Chromium).
# Installs only what is missing; without root it says what to install and goes on.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "apt: all present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "apt: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "apt: not root; tests needing$$missing will skip (install them with sudo apt-get install$$missing)"; fi

# The venv: torch pinned first so nothing can pull a CUDA build; then the project with every host extra.
$(STAMP):
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[host,dev]'
	@# onnx2torch (ONNX sources for the torch platforms) declares torchvision, whose PyPI wheel links CUDA torch:
	@# installed without it (host/models/onnx_torch.py imports it with a placeholder torchvision)
	$(BIN)/pip install -q --no-deps onnx2torch==1.5.15
	@# tflite-runtime (older Raspberry Pi OS images) needs numpy<2, so it gets a venv of its own for its test
	@test -x $(LEGACY)/bin/python || $(PY) -m venv $(LEGACY)
	$(LEGACY)/bin/pip install -q 'numpy<2' 'tflite-runtime==2.14.0'
	@rm -f $(VENV)/.setup-*; touch $@
	@echo "setup: done ($(VENV))"

venv: $(STAMP)

# Regenerate the gRPC Python from protos/*.proto (the generated files are committed; a test catches drift).
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. protos/edge_agent.proto

# Under CI (CI=true) and as root the emulated-device tier runs as well.
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not devices" tests
	@if [ -n "$$CI" ] && [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-devices; \
	else echo "(emulated-device tier not run: make test-devices, root only; CI runs it)"; fi

test-fast: setup
	$(BIN)/python -m pytest -q -x -m "not devices and not slow" tests

# Opt-in tier (CI runs it too): an emulated Raspberry Pi — arm64 Debian rootfs under qemu-user-static with sshd
# inside, cached in /var/cache/edgebench-pi (~8 min the first time). Needs root.
test-devices: setup
	sh tests/devices/make_pi_rootfs.sh
	EDGEBENCH_TEST_DEVICES=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m devices tests/devices

demo: setup
	$(BIN)/python -m host.demo

bench: setup
	$(BIN)/python bench/run_all.py

lint: setup
	$(BIN)/ruff check host agent tests bench

clean:
	rm -rf $(VENV) $(LEGACY) build dist *.egg-info
