#!/usr/bin/env bash
# Set everything up, then run the demo: real MNIST digits -> distilled set -> .dd -> student.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m tools.demo "$@"
