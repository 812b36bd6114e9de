#!/usr/bin/env bash
# Provisions the real servers used by tests/integration (filled in by the integration harness).
set -euo pipefail
