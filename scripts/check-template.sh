#!/usr/bin/env bash
# Offline checks of template.yaml: needs no AWS credentials, region or network
# (other than PyPI the first time, to build .venv via scripts/pyenv.sh).
#   1. SAM transform (aws-sam-translator) + structural assertions + cfn-lint on the output
#   2. sam validate --lint
#   3. cfn-lint on the SAM source
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/pyenv.sh

# Never reach for a profile, IMDS or telemetry.
export SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_DEFAULT_PROFILE

.venv/bin/python scripts/check-template.py template.yaml
# Works with no region too; --region pins the lint region so that a caller's AWS_REGION
# cannot change the result. Nothing is sent to AWS.
.venv/bin/sam validate --lint --region us-east-1 --template template.yaml
.venv/bin/cfn-lint template.yaml
echo "check-template.sh: all template checks passed"
