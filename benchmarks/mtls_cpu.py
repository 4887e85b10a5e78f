"""The two-sidecar mesh hop with mutual TLS, per proxy CPU-second, against nginx -> nginx with TLS
and client certificates; the latency the two hops add at one connection; the handshakes per
second one inbound takes. Not a test; bounded (every leg runs ``--seconds``), loopback only, and
every process started here is stopped on the way out.

    wrk -> sidecar A (outbound) =mTLS=> sidecar B (inbound) -> nginx backend (two instances)
    wrk -> nginx 1 (proxy_ssl_certificate, proxy_ssl_verify) =TLS 1.3=> nginx 2
           (ssl_verify_client on) -> nginx backend

Both sides use P-256 certificates chained to one root, TLS 1.3, keep-alive connections between
the proxies (so a handshake is rare). gossipmesh's A and B are two processes with the agent's own
credentials (workload certificates issued by each node's key, ``MeshAuthority`` judging peers);
nginx's certificates come from a throw-away root made here (a DNS name nginx can check).
The figure is per hop: 2 x requests / (CPU of A + B), sidecars on CPU 1, wrk and backend on 0.

    python benchmarks/mtls_cpu.py --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(__file__))
from proxy_cpu import (  # noqa: E402
    HOST,
    STARTUP_S,
    Result,
    children,
    cpu_split,
    launched,
    measure,
    nginx_conf,
    pin,
    wait_port,
)

BACKENDS = (18190, 18195)
OUT_PORT = 18191
IN_PORT = 18192
NGINX_PORT = 18193
NGINX2_PORT = 18194

SIDECAR = r"""
import os, signal, sys, time, trio
from gossipmesh.agent.node_identity import AgentIdentity
from gossipmesh.agent.peer_authority import MeshAuthority
from gossipmesh.agent.workloads import issue
from gossipmesh.config.schema import Destination, PathMatch, RouteConfig
from gossipmesh.identity import CaCredentials, NodeCredentials, TrustStore
from gossipmesh.proxy.mtls import MeshTls
from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table

role, host, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
out_port, in_port, b1, b2 = map(int, sys.argv[4:8])
now = int(time.time() * 1000)
from pathlib import Path
from gossipmesh.identity.files import load_ca, save_ca
ca_dir = Path(workdir) / "gm-ca"
if role == "ca":  # one root for both sidecars, made once
    save_ca(ca_dir, CaCredentials.generate("bench", now_ms=now))
    sys.exit(0)
ca = load_ca(ca_dir)
trust = TrustStore("bench", roots=[ca.cert_der])
node, service = ("n-out", "web") if role == "out" else ("n-in", "api")
ident = AgentIdentity(NodeCredentials.issue(ca, node, now_ms=now), trust, playground=False)
auth = MeshAuthority(lambda: ident)
auth.update_hosts({"n-out": frozenset({"web"}), "n-in": frozenset({"api"})})
mtls = MeshTls(issue(ident, [service], 24 * 3600 * 1000, now).credentials, auth)
route = RouteConfig("api-route", (Destination("api"),), hosts=("api",), path=PathMatch("prefix", "/"))
eps = [Endpoint("n-in", host, p, inbound=(host, in_port)) for p in (b1, b2)]
if role == "out":
    proxy = Proxy(outbound=(host, out_port), inbound=None, mtls=mtls)
else:
    proxy = Proxy(outbound=None, inbound=(host, in_port), mtls=mtls,
                  local_services={"api": [(host, b1), (host, b2)]})
# Under valgrind (proxy_instructions.py --legs mtls) a handshake takes seconds: longer timeouts.
from gossipmesh.config.service import ServiceConfig, Timeouts
services = {}
if os.environ.get("MTLS_SLOW") == "1":
    services = {"api": ServiceConfig("api", timeouts=Timeouts(60000, 60000, 60000))}
proxy.update_table(build_route_table(services, {"api-route": route}, {"api": eps}))
if role == "in":  # the handshake client needs a credential the inbound accepts
    web = issue(AgentIdentity(NodeCredentials.issue(ca, "n-out", now_ms=now), trust, False),
                ["web"], 24 * 3600 * 1000, now).credentials.services["web"]
    import ssl
    with open(os.path.join(workdir, "client.pem"), "wb") as f:
        f.write(b"".join(ssl.DER_cert_to_PEM_cert(d).encode() for d in web.chain) + web.key_pem)
    with open(os.path.join(workdir, "root.pem"), "wb") as f:
        f.write(ssl.DER_cert_to_PEM_cert(ca.cert_der).encode())

async def main():
    with trio.open_signal_receiver(signal.SIGTERM) as stop:
        async with trio.open_nursery() as n:
            await n.start(proxy.serve)
            os.write(1, b"ready\n")
            async for _ in stop:
                break
            hs = proxy.metrics.tls_handshakes
            os.write(1, f"handshakes {sorted(hs.items())}\n".encode())
            n.cancel_scope.cancel()

trio.run(main)
"""


@contextlib.contextmanager
def gm_sidecars(workdir: str, cpu: int | None) -> Iterator[list[int]]:
    with contextlib.ExitStack() as stack:
        pids = []
        for role in ("in", "out"):
            argv = [*pin(cpu), sys.executable, "-c", SIDECAR, role, HOST, workdir, str(OUT_PORT),
                    str(IN_PORT), *map(str, BACKENDS)]  # fmt: skip
            proc = stack.enter_context(launched(argv, stdout=subprocess.PIPE))
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise SystemExit(f"gossipmesh {role} sidecar did not start")
            pids.append(proc.pid)
        yield pids


def nginx_pki(workdir: str) -> None:
    """root.crt, server.{crt,key} (DNS:api), client.{crt,key} (DNS:web): P-256, like the mesh."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:  # fmt: skip
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        return b.sign(signer, hashes.SHA256())

    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench root")])
    root = cert("bench root", root_key, root_name, root_key, True)
    pem = serialization.Encoding.PEM
    with open(os.path.join(workdir, "ng-root.crt"), "wb") as f:
        f.write(root.public_bytes(pem))
    for role, name in (("server", "api"), ("client", "web")):
        key = ec.generate_private_key(ec.SECP256R1())
        with open(os.path.join(workdir, f"ng-{role}.crt"), "wb") as f:
            f.write(cert(name, key, root_name, root_key, False).public_bytes(pem))
        with open(os.path.join(workdir, f"ng-{role}.key"), "wb") as f:
            f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))  # fmt: skip


def run_nginx_tls(
    workdir: str, args: argparse.Namespace, backends: tuple[int, ...] = BACKENDS
) -> Result:
    d = workdir
    front = (
        f"upstream tls_be {{ server {HOST}:{NGINX2_PORT}; keepalive 64; }}"
        f" server {{ listen {HOST}:{NGINX_PORT}; location / {{ proxy_pass https://tls_be;"
        ' proxy_http_version 1.1; proxy_set_header Connection "";'
        f" proxy_ssl_certificate {d}/ng-client.crt; proxy_ssl_certificate_key {d}/ng-client.key;"
        f" proxy_ssl_trusted_certificate {d}/ng-root.crt; proxy_ssl_verify on;"
        " proxy_ssl_name api; proxy_ssl_server_name on; proxy_ssl_protocols TLSv1.3;"
        " proxy_ssl_session_reuse on; } }"
    )
    upstream = " ".join(f"server {HOST}:{p};" for p in backends)
    back = (
        f"upstream plain_be {{ {upstream} keepalive 64; }}"
        f" server {{ listen {HOST}:{NGINX2_PORT} ssl; ssl_protocols TLSv1.3;"
        f" ssl_certificate {d}/ng-server.crt; ssl_certificate_key {d}/ng-server.key;"
        f" ssl_client_certificate {d}/ng-root.crt; ssl_verify_client on;"
        " location / { proxy_pass http://plain_be; proxy_http_version 1.1;"
        ' proxy_set_header Connection ""; } }'
    )
    with contextlib.ExitStack() as stack:
        pids = []
        for name, server, port in (("tls2", back, NGINX2_PORT), ("tls1", front, NGINX_PORT)):
            conf = nginx_conf(workdir, name, server)
            proc = stack.enter_context(
                launched([*pin(args.proxy_cpu), "nginx", "-c", conf, "-p", workdir])
            )
            wait_port(port)
            deadline = time.monotonic() + STARTUP_S
            while not children(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            pids += [proc.pid, *children(proc.pid)]
        return measure("nginx-tls", NGINX_PORT, pids, 2, args)


def wrk_latency(port: int, seconds: float, cpu: int | None) -> tuple[float, float]:
    """(p50, p99) in microseconds at one connection."""
    out = subprocess.run(
        [*pin(cpu), "wrk", "-t1", "-c1", f"-d{max(1, round(seconds))}s", "--latency",
         "-H", "Host: api", f"http://{HOST}:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            raise SystemExit(f"cannot read wrk latency:\n{out}")
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

    return pct("50"), pct("99")


def handshake_client(workdir: str, stop: threading.Event, counts: list[int]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(os.path.join(workdir, "root.pem"))
    ctx.load_cert_chain(os.path.join(workdir, "client.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    while not stop.is_set():
        raw = socket.create_connection((HOST, IN_PORT))
        # As every proxy does: without it, Nagle holds the request behind the unacknowledged
        # Finished, and the server (no session ticket to send) delays its ACK 40 ms.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with raw, ctx.wrap_socket(raw, server_hostname="api") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: api\r\nx-gossipmesh-dest: "
                      + f"{HOST}:{BACKENDS[0]}".encode() + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
            with contextlib.suppress(ssl.SSLEOFError):
                while s.recv(65536):
                    pass
        counts[0] += 1


def handshakes_per_s(workdir: str, args: argparse.Namespace) -> str:
    """New mTLS connections (each one request, then closed) into one inbound, pinned to a core;
    clients are separate processes on the other core."""
    code = (
        "import sys, threading, time; sys.path.insert(0, sys.argv[3]);"
        "from mtls_cpu import handshake_client; stop = threading.Event(); c = [0];"
        "t = threading.Thread(target=handshake_client, args=(sys.argv[1], stop, c)); t.start();"
        "time.sleep(float(sys.argv[2])); stop.set(); t.join(); print(c[0])"
    )
    with gm_sidecars(workdir, args.proxy_cpu) as pids:
        inbound = [pids[0]]
        u0, s0 = cpu_split(inbound)
        t0 = time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    *pin(args.client_cpu),
                    sys.executable,
                    "-c",
                    code,
                    workdir,
                    str(args.seconds),
                    os.path.dirname(os.path.abspath(__file__)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(args.handshake_clients)
        ]
        n = sum(int(p.communicate(timeout=args.seconds + 60)[0]) for p in procs)
        wall = time.monotonic() - t0
        u1, s1 = cpu_split(inbound)
    cpu = (u1 - u0) + (s1 - s0)
    return (f"handshakes: {n / wall:,.0f}/s wall into one inbound ({args.handshake_clients} client"
            f" processes on CPU {args.client_cpu}), {n / max(cpu, 1e-9):,.0f} per inbound"
            f" CPU-second (each: TLS 1.3 + client certificate + peer check + one request)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per leg and round (max 60)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (max 10)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--handshake-clients", type=int, default=2)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    args = ap.parse_args()
    args.seconds = min(args.seconds, 60.0)
    args.rounds = max(1, min(args.rounds, 10))
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        raise SystemExit("needs wrk and nginx")
    args.client = "wrk"
    print(f"{time.strftime('%Y-%m-%d')} client=wrk c={args.connections} {args.seconds:g}s x"
          f" {args.rounds} rounds, sidecars on CPU {args.proxy_cpu}, client+backend on CPU"
          f" {args.client_cpu}")  # fmt: skip
    backend = " ".join(
        f'server {{ listen {HOST}:{p}; location / {{ return 200 "hello from the backend\\n"; }} }}'
        for p in BACKENDS
    )
    per: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as wd:
        subprocess.run([sys.executable, "-c", SIDECAR, "ca", HOST, wd, "0", "0", "0", "0"],
                       check=True)  # fmt: skip
        nginx_pki(wd)
        conf = nginx_conf(wd, "backend", backend)
        with launched([*pin(args.client_cpu), "nginx", "-c", conf, "-p", wd]):
            for p in BACKENDS:
                wait_port(p)
            for r in range(args.rounds):
                legs = [lambda: run_gm(wd, args), lambda: run_nginx_tls(wd, args)]
                if r % 2:
                    legs.reverse()
                for res in (make() for make in legs):
                    print(f"round {r + 1}: {res.line()}", flush=True)
                    per.setdefault(res.name, []).append(res.per_cpu_s)
            med = {k: statistics.median(v) for k, v in per.items()}
            for k, v in med.items():
                print(f"median {k:<10} {v:>9,.0f} hop-requests per proxy CPU-s"
                      f" = {v / med['nginx-tls']:.2f}x nginx with TLS and client certs")  # fmt: skip
            direct = wrk_latency(BACKENDS[0], args.seconds, args.client_cpu)
            with gm_sidecars(wd, args.proxy_cpu):
                wrk_latency(OUT_PORT, 1, args.client_cpu)  # the handshake, pools warm
                mesh = wrk_latency(OUT_PORT, args.seconds, args.client_cpu)
            print(f"latency at one connection: backend direct p50 {direct[0]:.0f} us p99"
                  f" {direct[1]:.0f} us; through both sidecars p50 {mesh[0]:.0f} us p99"
                  f" {mesh[1]:.0f} us; added p50 {mesh[0] - direct[0]:.0f} us p99"
                  f" {mesh[1] - direct[1]:.0f} us")  # fmt: skip
            print(handshakes_per_s(wd, args))


def run_gm(workdir: str, args: argparse.Namespace) -> Result:
    with gm_sidecars(workdir, args.proxy_cpu) as pids:
        return measure("gossipmesh", OUT_PORT, pids, 2, args)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
