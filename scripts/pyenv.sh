#!/usr/bin/env bash
# Creates (or refreshes) the repo-local Python virtualenv `.venv` holding the AWS
# tooling used by the template checks and the tests:
#   moto[server]        local DynamoDB-compatible server (moto_server)
#   aws-sam-translator  offline SAM -> CloudFormation transform
#   cfn-lint            CloudFormation linter
#   aws-sam-cli         `sam validate --lint`, `sam build`, `sam deploy`
#   cargo-lambda        the builder `sam build` runs (with zig), for scripts/check-artifacts.py
#
# Idempotent: when `.venv/.wxim-stamp` matches the pinned list below, it does
# nothing (re-runs are instant). Silent on success; on failure pip's error goes
# to stderr and the exit status is non-zero.
#
# Needs python3 (>= 3.9) with the venv module (Debian: python3-venv) and network
# access to PyPI. Set PYTHON=/path/to/python3 to choose the interpreter.
set -euo pipefail

# Pinned versions. Bump them together: aws-sam-cli pins its own
# aws-sam-translator exactly, so keep the two in step.
PINS=(
  "moto[server]==5.2.5"
  "aws-sam-translator==1.115.0"
  "cfn-lint==1.58.0"
  "aws-sam-cli==1.170.0"
  "cargo-lambda==1.9.2"
)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.wxim-stamp"
PYTHON="${PYTHON:-python3}"
WANT="$(printf '%s\n' "${PINS[@]}")"

up_to_date() {
  [[ -f "$STAMP" && -x "$VENV/bin/python" ]] && [[ "$(<"$STAMP")" == "$WANT" ]]
}

# Fast path: nothing to do, no lock taken.
if up_to_date; then
  exit 0
fi

mkdir -p "$VENV"
# Serialise concurrent callers (e.g. the test script and check-template.sh run
# at the same time) so that two pip installs never race in the same venv.
if command -v flock >/dev/null 2>&1; then
  # Lock the directory itself: `venv --clear` below empties it but keeps it.
  exec 9<"$VENV"
  flock 9
  if up_to_date; then
    exit 0
  fi
fi

# (Re)create the venv if it is missing or its interpreter no longer runs
# (e.g. the base python was upgraded or moved).
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  if ! "$PYTHON" -m venv --clear "$VENV"; then
    echo "pyenv.sh: '$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi

rm -f "$STAMP"
if ! PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$VENV/bin/python" -m pip install -q "${PINS[@]}"; then
  echo "pyenv.sh: pip install into $VENV failed" >&2
  exit 1
fi
printf '%s\n' "$WANT" >"$STAMP"
