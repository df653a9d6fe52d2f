#!/usr/bin/env bash
# Set everything up, then run the demo: real MNIST digits -> RUO-distilled .dd and real digits as
# pixels at the same bits per class -> a student from each; --long for the k-means/convert demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m tools.demo "$@"
