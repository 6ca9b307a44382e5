#!/usr/bin/env python3
"""The tests' DynamoDB-compatible server: moto's DynamoDB, applying one request at a time.

moto's own servers (moto_server, ThreadedMotoServer) answer requests on parallel threads, and its
DynamoDB backend does not lock an item between evaluating a condition and writing it, so two
concurrent conditional writes can both succeed: something DynamoDB never allows, and exactly what
the token lease and the dedupe markers rely on. Here connections are still served on threads
(keep-alive clients never block each other), but each request is applied under one lock, which
restores DynamoDB's guarantee; moto answers in about a millisecond, so it costs little.

Usage: dynamodb-server.py PORT [--until-stdin-closes]
Prints "ready" once listening. With --until-stdin-closes it stops when its stdin closes (so it
never outlives the test process that started it); otherwise it runs until killed.
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class Serialized:
    """Applies each request to moto under one lock; moto builds its whole response eagerly."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            return list(self.app(environ, start_response))


def main():
    port = int(sys.argv[1])
    server = make_server(
        "127.0.0.1",
        port,
        Serialized(DomainDispatcherApplication(create_backend_app)),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    if "--until-stdin-closes" in sys.argv[2:]:
        def watch():
            sys.stdin.read()
            server.shutdown()

        threading.Thread(target=watch, daemon=True).start()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
