"""A grpcio backend and a grpcio load client for benchmarks/h2_cpu.py ``--client grpc``. Not a
test; loopback only; bounded (the client stops after its seconds, the server on SIGTERM).

    python benchmarks/grpc_load.py server PORT
    python benchmarks/grpc_load.py client PORT SECONDS INFLIGHT

The server answers the unary method ``/bench.Echo/Call`` with a 24-byte message (bytes in and
out, no protobuf code to generate). The client keeps ``INFLIGHT`` calls outstanding on one
channel (one HTTP/2 connection, as a gRPC client holds it) for ``SECONDS`` and prints
``ok N failed M``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent import futures

import grpc

METHOD = "/bench.Echo/Call"
REPLY = b"hello from the backend\n\n"


def serve(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: REPLY)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Call": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


def load(port: int, seconds: float, inflight: int) -> None:
    ok = failed = 0
    lock = threading.Lock()
    deadline = time.monotonic() + min(seconds, 60.0)
    done = threading.Semaphore(0)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)

        def start() -> None:
            fut = call.future(b"ping", timeout=10)
            fut.add_done_callback(finished)

        def finished(fut: grpc.Future) -> None:
            nonlocal ok, failed
            with lock:
                if fut.exception() is None:
                    ok += 1
                else:
                    failed += 1
            if time.monotonic() < deadline:
                start()
            else:
                done.release()

        for _ in range(inflight):
            start()
        for _ in range(inflight):
            done.acquire()
    print(f"ok {ok} failed {failed}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        load(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
