#!/usr/bin/env python3
"""The tests' DynamoDB-compatible server: moto's DynamoDB, applying one request at a time.

moto's own servers (moto_server, ThreadedMotoServer) answer requests on parallel threads, and its
DynamoDB backend does not lock an item between evaluating a condition and writing it, so two
concurrent conditional writes can both succeed: something DynamoDB never allows, and exactly what
the token lease and the dedupe markers rely on. Here connections are still served on threads
(keep-alive clients never block each other), but each request is applied under one lock, which
restores DynamoDB's guarantee; moto answers in about a millisecond, so it costs little.

Usage: dynamodb-server.py PORT [--until-stdin-closes] [--state FILE] [--fast-transactions]
                          [--log-slow MS]
       dynamodb-server.py --self-test
Prints "ready" once listening. With --until-stdin-closes it stops when its stdin closes (so it
never outlives the test process that started it); otherwise it runs until killed.

With --state FILE (scripts/storm uses it to stop and restart "DynamoDB" mid-storm), the tables
are loaded from FILE at start when it exists, and saved to it when the server stops (stdin
closed, SIGTERM or SIGINT): under the request lock, so every request moto applied is in the
file and none is applied after it; requests still waiting for the lock die with the process
(their clients see a broken connection, as with any outage). A real DynamoDB never loses an
acknowledged write, so neither does a restart here.

With --fast-transactions, TransactWriteItems no longer deep-copies every table it touches (once
per write in it) as its rollback backup: with thousands of items that copy, not the request,
is what moto spends its time on, and a load test would measure it. Instead every condition is
evaluated first (DynamoDB evaluates them all against the state before the transaction, and no
two writes of one transaction touch the same item), nothing is written when one fails, and only
the touched items are backed up for the rare failure while applying. Same answers, same errors.
Likewise a Query on the table's key reads its partition instead of sorting the whole table.

With --log-slow MS, every request that held the lock for MS or more is written to stderr with
its X-Amz-Target (where a load test spends moto's time).
"""

import os
import pickle
import signal
import sys
import threading
import time

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class Serialized:
    """Applies each request to moto under one lock; moto builds its whole response eagerly."""

    def __init__(self, app, slow_ms=None):
        self.app = app
        self.lock = threading.Lock()
        self.slow_ms = slow_ms

    def __call__(self, environ, start_response):
        with self.lock:
            started = time.monotonic()
            body = list(self.app(environ, start_response))
            took = (time.monotonic() - started) * 1000
        if self.slow_ms is not None and took >= self.slow_ms:
            target = environ.get("HTTP_X_AMZ_TARGET", "?")
            print(f"slow: {target} {took:.1f} ms", file=sys.stderr, flush=True)
        return body


def install_fast_transactions():
    """Replaces moto's TransactWriteItems (see the module docs)."""
    import copy

    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend

    def transact_write_items(self, transact_items):
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        ops = []
        seen = set()
        for item in transact_items:
            if len(list(item.keys())) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            if op_type == "Put":
                table = self.get_table(table_name)
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            unique = (str(table_name), str(dict(sorted(key.items()))))
            if unique in seen:
                raise MultipleTransactionsException()
            seen.add(unique)
            ops.append((op_type, op, table_name, key))
        # Every condition against the state before the transaction.
        errors = []
        for op_type, op, table_name, key in ops:
            old = None
            try:
                current = self.get_item(table_name, key)
                cond = op.get("ConditionExpression")
                if cond is not None:
                    expr = get_filter_expression(
                        cond,
                        op.get("ExpressionAttributeNames"),
                        op.get("ExpressionAttributeValues"),
                    )
                    if not expr.expr(current):
                        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                            old = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed(item=old)
                errors.append((None, None, None))
            except MockValidationException:
                raise
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), old))
            except Exception as e:  # noqa: BLE001, as moto records them
                errors.append((type(e).__name__, str(e), None))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        # Then the writes, with the touched items backed up.
        backup = []
        try:
            for idx, (op_type, op, table_name, key) in enumerate(ops):
                if op_type == "ConditionCheck":
                    continue
                backup.append((table_name, key, copy.deepcopy(self.get_item(table_name, key))))
                names = op.get("ExpressionAttributeNames")
                values = op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    self.put_item(table_name, op["Item"], expression_attribute_names=names,
                                  expression_attribute_values=values)
                elif op_type == "Delete":
                    self.delete_item(table_name, key, expression_attribute_names=names,
                                     expression_attribute_values=values)
                else:
                    self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                     expression_attribute_names=names,
                                     expression_attribute_values=values)
        except Exception as e:
            for table_name, key, before in reversed(backup):
                if before is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before.to_json()["Attributes"])
            if isinstance(e, MockValidationException):
                raise
            errors[idx] = (type(e).__name__, str(e), None)
            raise TransactionCanceledException(errors)

    DynamoDBBackend.transact_write_items = transact_write_items

    # A Query on the table's own key reads its partition, not a sorted copy of the whole table
    # (moto's all_items sorts every item of the table on every query).
    from moto.dynamodb.models.table import Table

    moto_query = Table.query

    def query(self, hash_key, *args, **kwargs):
        if kwargs.get("index_name") is not None or (len(args) > 6 and args[6] is not None):
            return moto_query(self, hash_key, *args, **kwargs)
        part = self.items.get(hash_key)
        if part is None:
            items = []
        elif self.range_key_attr:
            items = sorted(part.values(), key=lambda x: x.range_key)
        else:
            items = [part]
        self.all_items = lambda: items
        try:
            return moto_query(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query


def load_state(path):
    """Puts the tables saved in `path` back into moto's DynamoDB backends."""
    from moto.dynamodb.models import dynamodb_backends

    with open(path, "rb") as f:
        saved = pickle.load(f)
    for account, regions in saved.items():
        for region, tables in regions.items():
            dynamodb_backends[account][region].tables.update(tables)


def save_state(path):
    """Writes every table of moto's DynamoDB backends to `path` (atomically)."""
    from moto.dynamodb.models import dynamodb_backends

    saved = {}
    for account, regions in dynamodb_backends.items():
        for region, backend in regions.items():
            if backend.tables:
                saved.setdefault(account, {})[region] = backend.tables
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(saved, f)
    os.replace(tmp, path)


def self_test():
    """Checks --state and --fast-transactions through real servers (run by scripts/test)."""
    import socket
    import subprocess
    import tempfile

    import boto3
    from botocore.exceptions import ClientError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = os.path.join(tempfile.mkdtemp(), "tables.snapshot")

    def start():
        p = subprocess.Popen(
            [sys.executable, __file__, str(port), "--until-stdin-closes", "--state", state,
             "--fast-transactions"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert p.stdout.readline().strip() == b"ready", "the server did not start"
        return p

    def stop(p):
        p.stdin.close()
        assert p.wait(timeout=30) == 0, "the server did not stop cleanly"

    db = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    key = {"pk": {"S": "p"}}
    p = start()
    db.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                               {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                          {"AttributeName": "sk", "AttributeType": "S"}])
    for pk in ("p", "q"):
        for sk in ("b", "a", "c"):
            db.put_item(TableName="t", Item={"pk": {"S": pk}, "sk": {"S": sk}})
    put = {"Put": {"TableName": "t", "Item": {"pk": {"S": "p"}, "sk": {"S": "new"}}}}
    failing = {"ConditionCheck": {"TableName": "t", "Key": {**key, "sk": {"S": "a"}},
                                  "ConditionExpression": "attribute_not_exists(pk)"}}
    try:
        db.transact_write_items(TransactItems=[put, failing])
        raise AssertionError("a failing condition must cancel the transaction")
    except ClientError as e:
        reasons = [r["Code"] for r in e.response["CancellationReasons"]]
        assert reasons == ["None", "ConditionalCheckFailed"], reasons
    assert "Item" not in db.get_item(TableName="t", Key={**key, "sk": {"S": "new"}}), \
        "a cancelled transaction writes nothing"
    db.transact_write_items(TransactItems=[put])
    got = db.query(TableName="t", KeyConditionExpression="pk = :p",
                   ExpressionAttributeValues={":p": {"S": "p"}})["Items"]
    assert [i["sk"]["S"] for i in got] == ["a", "b", "c", "new"], got
    stop(p)
    p = start()
    got = db.query(TableName="t", KeyConditionExpression="pk = :p",
                   ExpressionAttributeValues={":p": {"S": "q"}}, ScanIndexForward=False)["Items"]
    assert [i["sk"]["S"] for i in got] == ["c", "b", "a"], "the tables survive a restart"
    stop(p)
    print("dynamodb-server.py: self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    port = int(sys.argv[1])
    args = sys.argv[2:]
    state = args[args.index("--state") + 1] if "--state" in args else None
    if "--fast-transactions" in args:
        install_fast_transactions()
    if state and os.path.exists(state):
        load_state(state)
    slow = int(args[args.index("--log-slow") + 1]) if "--log-slow" in args else None
    app = Serialized(DomainDispatcherApplication(create_backend_app), slow)
    server = make_server(
        "127.0.0.1",
        port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    stop = threading.Event()

    def request_stop(*_):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    if "--until-stdin-closes" in args:
        def watch():
            sys.stdin.read()
            request_stop()

        threading.Thread(target=watch, daemon=True).start()
    if state:
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    print("ready", flush=True)
    server.serve_forever()
    if state:
        # Taken and never released: no request is applied after the save.
        app.lock.acquire()
        save_state(state)
        os._exit(0)


if __name__ == "__main__":
    main()
