#!/usr/bin/env python3
"""Offline check of template.yaml (AWS SAM).

cfn-lint alone no longer runs the SAM transform, so it misses mistakes inside
AWS::Serverless::* resources and Globals (a dangling !Ref in Environment, a bad
policy, ...). This script therefore:

  1. parses the template with samtranslator's YAML loader and asserts the
     structural facts the project relies on (build metadata, routes, IAM auth,
     least-privilege policies, the outbox stream mapping, NoEcho secrets, ...);
  2. translates it to plain CloudFormation with aws-sam-translator, offline
     (local CodeUri replaced by a placeholder S3 URI, a stub managed-policy
     loader, a fixed region: no AWS call, no credentials);
  3. runs cfn-lint on the translated JSON and fails on any error or warning.

Usage: .venv/bin/python scripts/check-template.py [TEMPLATE] [-o OUT.json]
Prints one summary line on success; exits 1 with the reasons otherwise.
If you change the template on purpose (a new route, a new permission), update
the expectations below in the same commit.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Deterministic and offline: the translator needs a region (for pseudo
# parameters) and must never look at the caller's AWS profile.
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _var in ("AWS_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
    os.environ.pop(_var, None)
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

try:
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse
except ImportError as exc:  # pragma: no cover - environment problem
    sys.exit(f"check-template: aws-sam-translator is not installed ({exc}); run scripts/pyenv.sh")

# --------------------------------------------------------------------------------------------
# Expectations
# --------------------------------------------------------------------------------------------

# Logical id -> cargo binary name (BuildProperties.Binary).
FUNCTIONS = {
    "WechatVerifyFunction": "wechat-verify",
    "WechatEventFunction": "wechat-event",
    "ImCallbackFunction": "im-callback",
    "NotifyDispatchFunction": "notify-dispatch",
    "BindFunction": "bind",
    "AdminNotifyFunction": "admin-notify",
}

# (path, method) -> (function, authorizer or None). Exactly these routes, on HttpApi.
ROUTES = {
    ("/wechat/{app}", "get"): ("WechatVerifyFunction", None),
    ("/wechat/{app}", "post"): ("WechatEventFunction", None),
    ("/im/callback", "post"): ("ImCallbackFunction", None),
    ("/bind", "post"): ("BindFunction", None),
    ("/notify", "post"): ("AdminNotifyFunction", "AWS_IAM"),
    ("/notify/{id}", "get"): ("AdminNotifyFunction", "AWS_IAM"),
}

_S, _O = "StateTable", "OutboxTable"
# Exactly these DynamoDB actions, per function, per table ARN (GetAtt <Table>.Arn).
DYNAMODB = {
    "WechatVerifyFunction": {},
    "WechatEventFunction": {
        _S: {"GetItem", "PutItem", "UpdateItem", "ConditionCheckItem"},
        _O: {"PutItem", "ConditionCheckItem"},
    },
    "ImCallbackFunction": {
        _S: {"GetItem", "Query", "PutItem", "UpdateItem", "ConditionCheckItem"},
        _O: {"PutItem", "ConditionCheckItem"},
    },
    "NotifyDispatchFunction": {
        _S: {"GetItem", "Query", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"},
        _O: {"GetItem", "PutItem", "UpdateItem", "ConditionCheckItem"},
    },
    "BindFunction": {
        _S: {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"},
    },
    "AdminNotifyFunction": {
        _S: {"GetItem", "Query", "PutItem"},
        _O: {"GetItem", "PutItem", "ConditionCheckItem"},
    },
}
# Other permissions a role may hold: function -> {(action, GetAtt target)}.
OTHER_ACTIONS = {
    # the spool: what the store cannot take is sent there; notify-dispatch sets its backoff
    "WechatEventFunction": {("sqs:SendMessage", "SpoolQueue")},
    "ImCallbackFunction": {("sqs:SendMessage", "SpoolQueue")},
    # added by SAM for DestinationConfig.OnFailure {Type: SQS}
    "NotifyDispatchFunction": {
        ("sqs:SendMessage", "DispatchDeadLetterQueue"),
        ("sqs:ChangeMessageVisibility", "SpoolQueue"),
    },
}
BASIC_ROLE = "service-role/AWSLambdaBasicExecutionRole"
MANAGED = {fn: {BASIC_ROLE} for fn in FUNCTIONS}
# added by SAM for the DynamoDB stream event (stream read actions)
MANAGED["NotifyDispatchFunction"].add("service-role/AWSLambdaDynamoDBExecutionRole")
# added by SAM for the spool's SQS event source (receive, delete)
MANAGED["NotifyDispatchFunction"].add("service-role/AWSLambdaSQSQueueExecutionRole")

# Function-level environment: name -> Ref target, on exactly these functions.
FUNCTION_ENVIRONMENT = {
    "WechatEventFunction": {"SPOOL_QUEUE_URL": "SpoolQueue"},
    "ImCallbackFunction": {"SPOOL_QUEUE_URL": "SpoolQueue"},
    "NotifyDispatchFunction": {"SPOOL_QUEUE_URL": "SpoolQueue"},
}
# The spool's redrive (store/spool/mod.rs MAX_RECEIVES) and visibility (VISIBILITY_SECS).
SPOOL_MAX_RECEIVES = 15
SPOOL_VISIBILITY_SECS = 360

FUNCTION_SETTINGS = {  # translated AWS::Lambda::Function properties
    "*": {"Runtime": "provided.al2023", "Architectures": ["arm64"], "Handler": "bootstrap"},
    "ImCallbackFunction": {"Timeout": 5},
    "NotifyDispatchFunction": {"Timeout": 60, "MemorySize": 256},
}

SECRET_PARAMS = [
    "WechatMpSecret", "WechatMpToken", "WechatMpAesKey",
    "WechatOaSecret", "WechatOaToken", "WechatOaAesKey",
    "ImSecretKey", "ImCallbackToken",
]
SECRET_NAME = re.compile(r"(Secret|SecretKey|Token|AesKey|Password)$")

# Globals.Function.Environment.Variables: name -> Ref target.
ENVIRONMENT = {
    "TABLE_NAME": "StateTable",
    "OUTBOX_TABLE_NAME": "OutboxTable",
    "RUST_LOG": "LogLevel",
    "WECHAT_API_BASE": "WechatApiBase",
    "WECHAT_MP_APPID": "WechatMpAppId",
    "WECHAT_MP_SECRET": "WechatMpSecret",
    "WECHAT_MP_TOKEN": "WechatMpToken",
    "WECHAT_MP_AES_KEY": "WechatMpAesKey",
    "WECHAT_OA_APPID": "WechatOaAppId",
    "WECHAT_OA_SECRET": "WechatOaSecret",
    "WECHAT_OA_TOKEN": "WechatOaToken",
    "WECHAT_OA_AES_KEY": "WechatOaAesKey",
    "IM_SDKAPPID": "ImSdkAppId",
    "IM_SECRET_KEY": "ImSecretKey",
    "IM_ADMIN_USER": "ImAdminUser",
    "IM_API_BASE": "ImApiBase",
    "IM_CALLBACK_TOKEN": "ImCallbackToken",
    "IM_AGENT_ACCOUNTS": "ImAgentAccounts",
    "IM_AGENT_ACCOUNTS_MP": "ImAgentAccountsMp",
    "NOTIFY_APP": "NotifyApp",
    "NOTIFY_TEMPLATE_ID": "NotifyTemplateId",
    "NOTIFY_DATA": "NotifyData",
    "NOTIFY_PAGE": "NotifyPage",
    "NOTIFY_DEBOUNCE_SECS": "NotifyDebounceSecs",
    "NOTIFY_TIMEZONE": "NotifyTimezone",
    "NOTIFY_PUSH_ONLINE": "NotifyPushOnline",
    "NOTIFY_GROUP_AT_ALL": "NotifyGroupAtAll",
    "NOTIFY_GROUP_AT_ALL_MAX": "NotifyGroupAtAllMax",
    "OA_WELCOME_TEXT": "OaWelcomeText",
    "OA_CONNECTING_TEXT": "OaConnectingText",
    "OA_FALLBACK_TEMPLATE_ID": "OaFallbackTemplateId",
    "OA_FALLBACK_DATA": "OaFallbackData",
    "OA_CONVERSATION_WINDOW_SECS": "OaConversationWindowSecs",
    "OA_FALLBACK_PAGE": "OaFallbackPage",
    "KF_MERGE_SECS": "KfMergeSecs",
    "IM_MEDIA_URL_HOSTS": "ImMediaUrlHosts",
}

OUTPUTS = {
    "ApiUrl", "WechatMpPushUrl", "WechatOaPushUrl", "ImCallbackUrl", "BindUrl", "NotifyUrl",
    "StateTableName", "OutboxTableName", "DeadLetterQueueUrl",
    "SpoolQueueUrl", "SpoolQueueName", "SpoolDeadLetterQueueUrl", "SpoolDeadLetterQueueName",
}

# --------------------------------------------------------------------------------------------

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def getatt_target(v: Any, attr: str = "Arn") -> str | None:
    """'X' for {"Fn::GetAtt": ["X", attr]} or {"Fn::GetAtt": "X.attr"}, else None."""
    if isinstance(v, dict) and list(v) == ["Fn::GetAtt"]:
        g = v["Fn::GetAtt"]
        parts = g.split(".", 1) if isinstance(g, str) else g
        if isinstance(parts, list) and len(parts) == 2 and parts[1] == attr:
            return parts[0]
    return None


def is_true(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() == "true")


# ---- checks on the SAM source -------------------------------------------------------------


def check_source(tpl: dict[str, Any]) -> None:
    resources = tpl.get("Resources") or {}
    gfn = ((tpl.get("Globals") or {}).get("Function")) or {}

    functions = {k: r for k, r in resources.items() if r.get("Type") == "AWS::Serverless::Function"}
    if set(functions) != set(FUNCTIONS):
        fail(f"functions are {sorted(functions)}, expected {sorted(FUNCTIONS)}")
    for fid, binary in FUNCTIONS.items():
        res = functions.get(fid)
        if res is None:
            continue
        meta = res.get("Metadata") or {}
        if meta.get("BuildMethod") != "rust-cargolambda":
            fail(f"{fid}: Metadata.BuildMethod is {meta.get('BuildMethod')!r}, expected 'rust-cargolambda'")
        got = (meta.get("BuildProperties") or {}).get("Binary")
        if got != binary:
            fail(f"{fid}: Metadata.BuildProperties.Binary is {got!r}, expected {binary!r}")
        code_uri = (res.get("Properties") or {}).get("CodeUri", gfn.get("CodeUri"))
        # The package directory, where `cargo lambda build --bin` selects that package alone (with
        # its own features); at the workspace root it would build with every function's features.
        if code_uri != f"functions/{binary}":
            fail(f"{fid}: CodeUri is {code_uri!r}, expected 'functions/{binary}' (its package directory)")

    env = ((gfn.get("Environment") or {}).get("Variables")) or {}
    for name, target in ENVIRONMENT.items():
        if env.get(name) != {"Ref": target}:
            fail(f"Globals environment {name} is {env.get(name)!r}, expected !Ref {target}")
    for name in sorted(set(env) - set(ENVIRONMENT)):
        fail(f"Globals environment {name} is not expected (add it to ENVIRONMENT in this script)")

    for fid in FUNCTIONS:
        fenv = (((functions.get(fid) or {}).get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
        want_env = FUNCTION_ENVIRONMENT.get(fid, {})
        if fenv != {k: {"Ref": v} for k, v in want_env.items()}:
            fail(f"{fid}: environment {fenv!r}, expected {want_env!r} (as !Ref)")

    params = tpl.get("Parameters") or {}
    for name in SECRET_PARAMS:
        if name not in params:
            fail(f"secret parameter {name} is missing")
    for name, p in params.items():
        if (name in SECRET_PARAMS or SECRET_NAME.search(name)) and not is_true((p or {}).get("NoEcho")):
            fail(f"parameter {name} holds a secret but is not NoEcho: true")

    for name in sorted(OUTPUTS - set(tpl.get("Outputs") or {})):
        fail(f"output {name} is missing")


# ---- checks on the translated CloudFormation ----------------------------------------------


def check_translated(cfn: dict[str, Any]) -> None:
    res = cfn.get("Resources") or {}

    # Functions
    for fid in FUNCTIONS:
        props = (res.get(fid) or {}).get("Properties") or {}
        want = {**FUNCTION_SETTINGS["*"], **FUNCTION_SETTINGS.get(fid, {})}
        for key, value in want.items():
            if props.get(key) != value:
                fail(f"{fid}: {key} is {props.get(key)!r}, expected {value!r}")

    # Routes and their authorization
    api = res.get("HttpApi") or {}
    if api.get("Type") != "AWS::ApiGatewayV2::Api":
        fail("HttpApi (AWS::Serverless::HttpApi) is missing")
    paths = ((api.get("Properties") or {}).get("Body") or {}).get("paths") or {}
    seen = set()
    for path, methods in paths.items():
        for method, op in (methods or {}).items():
            key = (path, method.lower())
            seen.add(key)
            if key not in ROUTES:
                fail(f"unexpected route {method.upper()} {path} (add it to ROUTES in this script)")
                continue
            fid, auth = ROUTES[key]
            uri = json.dumps(((op or {}).get("x-amazon-apigateway-integration") or {}).get("uri"))
            if "${%s.Arn}" % fid not in uri:
                fail(f"route {method.upper()} {path} does not invoke {fid} (integration uri {uri})")
            security = [k for s in ((op or {}).get("security") or []) for k in s]
            want_sec = [auth] if auth else []
            if security != want_sec:
                fail(f"route {method.upper()} {path}: authorizers {security}, expected {want_sec}")
    for path, method in sorted(set(ROUTES) - seen):
        fail(f"route {method.upper()} {path} is missing from HttpApi")
    stages = [
        r for r in res.values()
        if r.get("Type") == "AWS::ApiGatewayV2::Stage" and (r.get("Properties") or {}).get("ApiId") == {"Ref": "HttpApi"}
    ]
    if [(s.get("Properties") or {}).get("StageName") for s in stages] != ["$default"]:
        fail("HttpApi must have exactly one stage, named $default (no stage prefix in URLs)")

    # The sweep: an EventBridge schedule invoking notify-dispatch with {"action":"sweep"}
    rules = [
        r.get("Properties") or {} for r in res.values()
        if r.get("Type") == "AWS::Events::Rule"
        and any(
            getatt_target(t.get("Arn")) == "NotifyDispatchFunction"
            for t in ((r.get("Properties") or {}).get("Targets") or [])
        )
    ]
    if len(rules) != 1:
        fail(f"NotifyDispatchFunction has {len(rules)} schedules, expected 1 (the sweep)")
    for rule in rules:
        if rule.get("ScheduleExpression") != {"Ref": "SweepSchedule"}:
            fail(f"the sweep's ScheduleExpression is {rule.get('ScheduleExpression')!r}, expected !Ref SweepSchedule")
        if rule.get("State", "ENABLED") != "ENABLED":
            fail("the sweep's schedule must be enabled")
        inputs = []
        for t in rule.get("Targets") or []:
            try:
                inputs.append(json.loads(t.get("Input", "")))
            except (TypeError, ValueError):
                inputs.append(t.get("Input"))
        if inputs != [{"action": "sweep"}]:
            fail(f"the sweep's target input is {inputs}, expected [{{\"action\": \"sweep\"}}]")
    perms = [
        r.get("Properties") or {} for r in res.values()
        if r.get("Type") == "AWS::Lambda::Permission"
        and (r.get("Properties") or {}).get("Principal") == "events.amazonaws.com"
    ]
    if not any(p.get("FunctionName") == {"Ref": "NotifyDispatchFunction"} for p in perms):
        fail("EventBridge is not allowed to invoke NotifyDispatchFunction (AWS::Lambda::Permission)")
    params = cfn.get("Parameters") or {}
    if (params.get("SweepSchedule") or {}).get("Default") != "rate(1 minute)":
        fail("parameter SweepSchedule must default to rate(1 minute)")

    # Outbox stream -> notify-dispatch
    all_esms = [
        r.get("Properties") or {} for r in res.values()
        if r.get("Type") == "AWS::Lambda::EventSourceMapping"
        and (r.get("Properties") or {}).get("FunctionName") == {"Ref": "NotifyDispatchFunction"}
    ]
    if len(all_esms) != 2:
        fail(f"NotifyDispatchFunction has {len(all_esms)} event source mappings, expected 2 (outbox stream, spool)")
    esms = [e for e in all_esms if getatt_target(e.get("EventSourceArn"), "StreamArn") is not None]
    spools = [e for e in all_esms if getatt_target(e.get("EventSourceArn")) == "SpoolQueue"]
    if len(esms) != 1 or len(spools) != 1:
        fail("notify-dispatch needs one stream event source and one on SpoolQueue.Arn")
    for esm in spools:
        if "ReportBatchItemFailures" not in (esm.get("FunctionResponseTypes") or []):
            fail("the spool's event source lacks FunctionResponseTypes ReportBatchItemFailures")
        if not isinstance(esm.get("BatchSize"), int) or not 1 <= esm["BatchSize"] <= 10:
            fail(f"the spool's BatchSize is {esm.get('BatchSize')!r}, expected 1 to 10")
    queue = (res.get("SpoolQueue") or {}).get("Properties") or {}
    redrive = queue.get("RedrivePolicy") or {}
    if getatt_target(redrive.get("deadLetterTargetArn")) != "SpoolDeadLetterQueue":
        fail("SpoolQueue's RedrivePolicy must target SpoolDeadLetterQueue.Arn")
    if str(redrive.get("maxReceiveCount")) != str(SPOOL_MAX_RECEIVES):
        fail(f"SpoolQueue's maxReceiveCount is {redrive.get('maxReceiveCount')!r}, expected {SPOOL_MAX_RECEIVES} (MAX_RECEIVES)")
    if queue.get("VisibilityTimeout") != SPOOL_VISIBILITY_SECS:
        fail(f"SpoolQueue's VisibilityTimeout is {queue.get('VisibilityTimeout')!r}, expected {SPOOL_VISIBILITY_SECS}")
    for qid in ("SpoolQueue", "SpoolDeadLetterQueue", "DispatchDeadLetterQueue"):
        qp = (res.get(qid) or {}).get("Properties") or {}
        if not is_true(qp.get("SqsManagedSseEnabled")):
            fail(f"{qid}: SqsManagedSseEnabled must be true")
        if qp.get("MessageRetentionPeriod") != 1209600:
            fail(f"{qid}: MessageRetentionPeriod must be 1209600 (14 days)")
    for esm in esms:
        if getatt_target(esm.get("EventSourceArn"), "StreamArn") != "OutboxTable":
            fail("notify-dispatch event source is not OutboxTable.StreamArn")
        patterns = []
        for f in ((esm.get("FilterCriteria") or {}).get("Filters") or []):
            try:
                patterns.append(json.loads(f.get("Pattern", "")))
            except (TypeError, ValueError):
                patterns.append(f.get("Pattern"))
        if patterns != [{"eventName": ["INSERT"]}]:
            fail(f"notify-dispatch FilterCriteria patterns are {patterns}, expected [{{\"eventName\":[\"INSERT\"]}}]")
        if "ReportBatchItemFailures" not in (esm.get("FunctionResponseTypes") or []):
            fail("notify-dispatch event source lacks FunctionResponseTypes ReportBatchItemFailures")
        on_failure = ((esm.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        if getatt_target(on_failure) != "DispatchDeadLetterQueue":
            fail("notify-dispatch event source has no OnFailure destination to DispatchDeadLetterQueue")
        if not is_true(esm.get("BisectBatchOnFunctionError")):
            fail("notify-dispatch event source must set BisectBatchOnFunctionError")
        retries = esm.get("MaximumRetryAttempts")
        if not isinstance(retries, int) or not 0 <= retries <= 100:
            fail(f"notify-dispatch MaximumRetryAttempts is {retries!r}; it must be finite")
        if esm.get("StartingPosition") != "TRIM_HORIZON":
            fail(f"notify-dispatch StartingPosition is {esm.get('StartingPosition')!r}, expected TRIM_HORIZON")

    # IAM: exactly the expected permissions, nothing broader
    for fid in FUNCTIONS:
        role = ((res.get(f"{fid}Role") or {}).get("Properties")) or {}
        if not role:
            fail(f"{fid}: no SAM-generated role {fid}Role (a custom Role bypasses these checks)")
            continue
        managed = set()
        for arn in role.get("ManagedPolicyArns") or []:
            m = re.fullmatch(r"arn:[\w-]+:iam::aws:policy/(.+)", arn) if isinstance(arn, str) else None
            managed.add(m.group(1) if m else json.dumps(arn))
        if managed != MANAGED[fid]:
            fail(f"{fid}: managed policies {sorted(managed)}, expected {sorted(MANAGED[fid])}")
        dynamo: dict[str, set[str]] = {}
        other: set[tuple[str, str | None]] = set()
        has_dynamodb = False
        for pol in role.get("Policies") or []:
            for st in as_list((pol.get("PolicyDocument") or {}).get("Statement") or []):
                if st.get("Effect") != "Allow":
                    continue
                if "NotAction" in st or "NotResource" in st:
                    fail(f"{fid}: NotAction/NotResource statements are not allowed")
                resources = as_list(st.get("Resource"))
                actions = as_list(st.get("Action"))
                ddb = [a for a in actions if isinstance(a, str) and a.lower().startswith("dynamodb:")]
                if any(a == "*" for a in actions):
                    fail(f"{fid}: wildcard action '*' is not allowed")
                if ddb:
                    has_dynamodb = True
                    bad = [r for r in resources if getatt_target(r) not in (_S, _O)]
                    if bad:
                        fail(
                            f"{fid}: {', '.join(ddb)} on {', '.join(json.dumps(r) for r in bad)}; "
                            "DynamoDB access must be scoped to !GetAtt StateTable.Arn / OutboxTable.Arn"
                        )
                    for r in resources:
                        if getatt_target(r) in (_S, _O):
                            dynamo.setdefault(getatt_target(r), set()).update(a.split(":", 1)[1] for a in ddb)
                for a in actions:
                    if a not in ddb and a != "*":
                        other.update((a, getatt_target(r)) for r in resources)
        want = DYNAMODB[fid]
        if fid == "WechatVerifyFunction" and has_dynamodb:
            fail("WechatVerifyFunction must have no DynamoDB permission at all")
        elif dynamo != want:
            for table in sorted(set(want) | set(dynamo)):
                extra = dynamo.get(table, set()) - want.get(table, set())
                missing = want.get(table, set()) - dynamo.get(table, set())
                if extra:
                    fail(f"{fid}: unexpected dynamodb actions on {table}: {sorted(extra)}")
                if missing:
                    fail(f"{fid}: missing dynamodb actions on {table}: {sorted(missing)}")
        want_other = OTHER_ACTIONS.get(fid, set())
        if other != want_other:
            fail(f"{fid}: non-DynamoDB permissions {sorted(other, key=str)}, expected {sorted(want_other)}")

    # Tables
    for tid in (_S, _O):
        t = res.get(tid) or {}
        p = t.get("Properties") or {}
        if t.get("Type") != "AWS::DynamoDB::Table":
            fail(f"{tid} (AWS::DynamoDB::Table) is missing")
            continue
        if t.get("DeletionPolicy") != "Retain" or t.get("UpdateReplacePolicy") != "Retain":
            fail(f"{tid}: DeletionPolicy and UpdateReplacePolicy must be Retain")
        if p.get("BillingMode") != "PAY_PER_REQUEST":
            fail(f"{tid}: BillingMode must be PAY_PER_REQUEST")
        keys = {k.get("AttributeName"): k.get("KeyType") for k in p.get("KeySchema") or []}
        if keys != {"pk": "HASH", "sk": "RANGE"}:
            fail(f"{tid}: KeySchema is {keys}, expected pk HASH / sk RANGE")
        ttl = p.get("TimeToLiveSpecification") or {}
        if ttl.get("AttributeName") != "expires_at" or not is_true(ttl.get("Enabled")):
            fail(f"{tid}: TTL must be enabled on expires_at")
        if not is_true((p.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled")):
            fail(f"{tid}: point-in-time recovery must be enabled")
        if not is_true((p.get("SSESpecification") or {}).get("SSEEnabled")):
            fail(f"{tid}: SSESpecification.SSEEnabled must be true")
    stream = ((res.get(_O) or {}).get("Properties") or {}).get("StreamSpecification") or {}
    if stream.get("StreamViewType") != "NEW_IMAGE":
        fail(f"OutboxTable: StreamViewType is {stream.get('StreamViewType')!r}, expected NEW_IMAGE")


# ---- translate + lint ---------------------------------------------------------------------


class _NoAwsPolicyLoader:
    """Stands in for ManagedPolicyLoader: resolves no policy name, calls no AWS API."""

    def load(self) -> dict[str, str]:
        return {}


def translate(tpl: dict[str, Any]) -> dict[str, Any]:
    tpl = copy.deepcopy(tpl)
    placeholder = "s3://placeholder/code.zip"
    gfn = (tpl.get("Globals") or {}).get("Function")
    if isinstance(gfn, dict) and isinstance(gfn.get("CodeUri"), str):
        gfn["CodeUri"] = placeholder
    for r in (tpl.get("Resources") or {}).values():
        props = r.get("Properties") if isinstance(r, dict) else None
        if r.get("Type") in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion") and isinstance(props, dict):
            for key in ("CodeUri", "ContentUri"):
                if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                    props[key] = placeholder
    return transform(tpl, {}, _NoAwsPolicyLoader())


def cfn_lint(path: Path) -> tuple[int, str]:
    exe = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(exe)] if exe.exists() else [shutil.which("cfn-lint") or "cfn-lint"]
    # Default --non-zero-exit-code is "informational": any reported rule fails.
    proc = subprocess.run([*cmd, "--", str(path)], capture_output=True, text=True)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("template", nargs="?", default=str(ROOT / "template.yaml"))
    ap.add_argument("-o", "--output", help="also write the translated CloudFormation JSON here")
    args = ap.parse_args()
    src = Path(args.template)

    try:
        tpl = yaml_parse(src.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - report any parse problem plainly
        print(f"check-template: FAIL: cannot parse {src}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(tpl, dict):
        print(f"check-template: FAIL: {src} is not a mapping", file=sys.stderr)
        return 1

    check_source(tpl)

    try:
        cfn = translate(tpl)
    except InvalidDocumentException as exc:
        for cause in exc.causes:
            fail(f"SAM transform: {cause.message}")
        cfn = None
    except Exception as exc:  # noqa: BLE001
        fail(f"SAM transform crashed: {type(exc).__name__}: {exc}")
        cfn = None

    lint_out = ""
    if cfn is not None:
        check_translated(cfn)
        with tempfile.NamedTemporaryFile(
            "w", prefix="wxim-template-", suffix=".json", delete=False, encoding="utf-8"
        ) as fh:
            json.dump(cfn, fh, indent=2, ensure_ascii=False)
            out = Path(fh.name)
        if args.output:
            shutil.copyfile(out, args.output)
        rc, lint_out = cfn_lint(out)
        if rc != 0:
            fail(f"cfn-lint on the translated template (kept at {out}) exited {rc}:\n{lint_out}")
        else:
            out.unlink()

    if failures:
        for msg in failures:
            print(f"check-template: FAIL: {msg}", file=sys.stderr)
        print(f"check-template: {len(failures)} problem(s) in {src}", file=sys.stderr)
        return 1

    n_res = len(cfn["Resources"]) if cfn else 0
    n_iam = sum(1 for _, a in ROUTES.values() if a)
    print(
        f"check-template: OK {src.name}: {len(FUNCTIONS)} functions, {len(ROUTES)} routes "
        f"({n_iam} AWS_IAM), outbox stream INSERT-only with DLQ, sweep schedule, least-privilege roles; "
        f"SAM transform -> {n_res} CloudFormation resources, cfn-lint clean"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
