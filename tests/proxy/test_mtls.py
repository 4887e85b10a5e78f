"""mTLS on the mesh hop and authorization at the destination, through real sockets.

app -> A outbound (n1, web) -> [recording relay] -> B inbound (n2, api) -> h11 backend
"""

from __future__ import annotations

import hashlib
import ssl
from functools import partial
from typing import Any

import trio
from mtls_helpers import DAY_MS, HOSTS, Pki, Wall, start_mtls_mesh, tls_exchange
from proxy_helpers import Backend, Client, raw_exchange, service

from gossipmesh.config.schema import PolicyConfig, validate_entity
from gossipmesh.identity import fingerprint
from gossipmesh.proxy.authz import Policies
from gossipmesh.proxy.limits import INBOUND, OUTBOUND, ProxyLimits
from gossipmesh.proxy.mtls import MeshTls
from gossipmesh.proxy.server import Proxy
from gossipmesh.proxy.table import Endpoint, build_route_table


def policy(name: str, body: dict[str, Any]) -> PolicyConfig:
    p = validate_entity("policy", name, body)
    assert isinstance(p, PolicyConfig)
    return p


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, *args))


async def refused(fn: Any, *args: Any) -> bool:
    """True if the TLS exchange got no HTTP response (an alert, a reset or nothing)."""
    try:
        out = await in_thread(fn, *args)
    except (ssl.SSLError, OSError):
        return True
    return not out.startswith(b"HTTP/")


async def test_requests_cross_the_hop_over_mutual_tls_on_the_fast_path(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    c = await Client.open(mesh.outbound)
    for _ in range(20):
        r = await c.request("GET", "/name", "api")
        assert (r.status, r.body) == (200, b"be1")
    await c.aclose()
    # One handshake, pooled and kept alive; both sides' engines served the exchanges.
    assert mesh.a.metrics.tls_handshakes == {(OUTBOUND, "ok"): 1}
    assert mesh.b.metrics.tls_handshakes == {(INBOUND, "ok"): 1}
    assert mesh.a.fast_served >= 19 and mesh.b.fast_served >= 19


async def test_a_capture_of_the_hop_holds_no_plaintext_of_the_request(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery, relay=True)
    assert mesh.relay is not None
    c = await Client.open(mesh.outbound)
    secret = "Bearer sekrit-token-4242"
    r = await c.request("GET", "/echo/very-private-path", "api", [("authorization", secret)])
    assert (r.status, r.body) == (200, b"/echo/very-private-path")
    r = await c.request("POST", "/upload", "api", body=b"card=4111111111111111")
    assert r.status == 200
    await c.aclose()
    cap = bytes(mesh.relay.captured)
    assert cap[:1] == b"\x16"  # a TLS handshake record opened the hop
    for plain in (b"sekrit-token", b"very-private-path", b"4111111111", b"HTTP/1.1", b"upload"):
        assert plain not in cap, plain
    assert b"api" in cap  # the destination service is named in the clear: SNI (SECURITY.md)


async def test_plaintext_to_the_inbound_gets_a_tls_alert_never_an_app_response(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    be = mesh.backends["api"][0]
    dest = f"{be.host}:{be.port}"
    req = f"GET /name HTTP/1.1\r\nHost: api\r\nx-gossipmesh-dest: {dest}\r\n\r\n".encode()
    try:
        out = await raw_exchange(mesh.inbound, req)
    except trio.BrokenResourceError:
        out = b""  # reset: the handshake failed with our bytes unread
    assert b"HTTP/" not in out and b"be1" not in out
    assert out == b"" or out[:1] == b"\x15"  # nothing, or a TLS alert record
    assert be.requests == 0


async def test_no_certificate_or_another_roots_certificate_is_refused(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    roots = (mesh.pki.ca.cert_der,)
    req = b"GET /name HTTP/1.1\r\nHost: api\r\n\r\n"
    assert await refused(tls_exchange, mesh.inbound, None, roots, "api", req)
    stranger = Pki(Wall())  # another CA, same cluster name
    cred = stranger.workload("n1", "web")
    assert await refused(tls_exchange, mesh.inbound, cred, roots, "api", req)
    assert mesh.backends["api"][0].requests == 0


async def test_a_member_presenting_another_services_identity_is_refused(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    roots = (mesh.pki.ca.cert_der,)
    req = b"GET /name HTTP/1.1\r\nHost: api\r\n\r\n"
    # n1 is a member and signs a certificate for "api", which the catalog says n2 hosts.
    forged = mesh.pki.workload("n1", "api")
    assert await refused(tls_exchange, mesh.inbound, forged, roots, "api", req)
    assert mesh.b.metrics.tls_rejected == {(INBOUND, "not_hosting"): 1}
    assert mesh.backends["api"][0].requests == 0
    # The same member with its own service's identity is served.
    own = mesh.pki.workload("n1", "web")
    out = await in_thread(tls_exchange, mesh.inbound, own, roots, "api", req)
    assert out.startswith(b"HTTP/1.1 200")


async def wait_for(what: str, cond: Any, timeout_s: float = 5.0) -> None:
    with trio.fail_after(timeout_s):
        while not cond():
            await trio.sleep(0.05)


async def test_revoked_node_loses_its_live_connections_and_new_ones(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    c = await Client.open(mesh.outbound)
    assert (await c.request("GET", "/name", "api")).status == 200
    assert len(mesh.b.watch.live) == 1  # type: ignore[union-attr]
    mesh.pki.trust.revoke(fingerprint(mesh.pki.node("n1").cert_der))
    # Within the next sweep (about a second), B closes the hop A opened as n1.
    await wait_for("the revoked hop closed", lambda: mesh.b.metrics.tls_closed.get("revoked"))
    assert not mesh.b.watch.live  # type: ignore[union-attr]
    r = await c.request("GET", "/name", "api")
    assert r.status in (502, 503) and mesh.backends["api"][0].requests == 1
    assert mesh.b.metrics.tls_rejected.get((INBOUND, "revoked"), 0) >= 1
    await c.aclose()


async def test_expired_certificates_lose_their_connections_and_are_refused(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    c = await Client.open(mesh.outbound)
    assert (await c.request("GET", "/name", "api")).status == 200
    mesh.wall.offset_ms = 2 * DAY_MS  # every workload certificate is past its end
    await wait_for("B closed the expired caller", lambda: mesh.b.metrics.tls_closed.get("expired"))
    await wait_for("A closed the expired server", lambda: mesh.a.metrics.tls_closed.get("expired"))
    r = await c.request("GET", "/name", "api")
    assert r.status in (502, 503)
    assert mesh.a.metrics.tls_rejected.get((OUTBOUND, "expired"), 0) >= 1
    await c.aclose()


async def test_policies_by_caller_method_and_path_apply_to_the_next_request(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery)
    c = await Client.open(mesh.outbound)

    async def status(method: str = "GET", path: str = "/name") -> tuple[int, str]:
        r = await c.request(method, path, "api", body=b"" if method == "POST" else None)
        return r.status, r.headers.get("x-gossipmesh-policy", "")

    assert await status() == (200, "")
    mesh.b.update_policies(
        Policies(
            [
                policy(
                    "no-post", {"to": "api", "action": "deny", "from": ["web"], "methods": ["POST"]}
                )
            ]
        )  # fmt: skip
    )
    assert await status() == (200, "")
    assert await status("POST", "/upload") == (403, "no-post")
    r = await c.request("POST", "/upload", "api", body=b"")
    assert r.headers["x-gossipmesh-error"] == "forbidden_by_policy"
    assert b"policy/no-post" in r.body and b"spiffe://mesh/svc/web" in r.body
    assert mesh.b.metrics.denied[("api", "no-post")] == 2
    # Paths: prefixes at segment boundaries, matched on the normalised path.
    mesh.b.update_policies(
        Policies([policy("admin", {"to": "api", "action": "deny", "paths": ["/admin"]})])
    )
    for path in ("/admin", "/admin/x", "/%61dmin", "//admin", "/x/../admin", "/admin?a=1"):
        assert await status(path=path) == (403, "admin"), path
    assert (await status(path="/administrator"))[0] == 200
    assert (await status(path="/admin%2Fx"))[0] == 400  # an encoded separator: ambiguous
    # Default deny: only what an allow policy names gets through.
    deny_default = {"api": "deny"}
    allow_node = policy("n1", {"to": "api", "from": ["spiffe://mesh/node/n1"]})
    allow_other = policy("other", {"to": "api", "from": ["other"]})
    mesh.b.update_policies(Policies([allow_other], deny_default))
    assert await status() == (403, "default")
    mesh.b.update_policies(Policies([allow_other, allow_node], deny_default))
    assert await status() == (200, "")
    await c.aclose()
    assert mesh.backends["api"][0].seen_targets.count(b"/administrator") == 1


async def test_renewal_under_steady_traffic_fails_no_request(nursery: trio.Nursery) -> None:
    mesh = await start_mtls_mesh(nursery)
    statuses: list[int] = []
    done = trio.Event()

    async def client() -> None:
        c = await Client.open(mesh.outbound)
        while not done.is_set():
            statuses.append((await c.request("GET", "/name", "api")).status)
        await c.aclose()

    async with trio.open_nursery() as n:
        for _ in range(4):
            n.start_soon(client)
        for k in range(1, 7):
            while len(statuses) < 20 * k:  # renew every 20 requests, mid-traffic
                await trio.sleep(0.005)
            if k < 6:
                mesh.a.update_credentials(mesh.pki.credentials("n1", ["web"]))
                mesh.b.update_credentials(mesh.pki.credentials("n2", ["api"]))
        done.set()
    assert set(statuses) == {200}
    # New handshakes used the new certificates; retired connections were replaced.
    assert mesh.a.metrics.tls_handshakes[(OUTBOUND, "ok")] > 1


async def test_tcp_service_over_mtls_with_policies_at_connection_time(
    nursery: trio.Nursery,
) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    mesh = await start_mtls_mesh(nursery, relay=True, tcp_listeners={"kv": ("127.0.0.1", 0)})
    mesh.b.update_local_services({"kv": [("127.0.0.1", port)]})
    mesh.b.update_credentials(mesh.pki.credentials("n2", ["api", "kv"]))

    kv = service("kv", {"protocol": "tcp"})
    table = build_route_table({"kv": kv}, {}, {"kv": [Endpoint("n2", "127.0.0.1", port,
                                                               inbound=mesh.hop)]})  # fmt: skip
    mesh.a.update_table(table)
    mesh.b.update_table(table)
    for auth in (mesh.a.mtls.authority, mesh.b.mtls.authority):  # type: ignore[union-attr]
        auth.update_hosts({"n1": frozenset({"web"}), "n2": frozenset({"kv"})})  # type: ignore[attr-defined]
    tcp = mesh.a_addr.tcp["kv"]
    stream = await trio.open_tcp_stream(*tcp)
    await stream.send_all(b"tunnel-secret-1")
    with trio.fail_after(5):
        got = b""
        while len(got) < 15:
            got += await stream.receive_some(100)
    assert got == b"tunnel-secret-1"
    assert mesh.relay is not None and b"tunnel-secret" not in mesh.relay.captured
    # A deny applies to the next connection; the open tunnel keeps its decision.
    mesh.b.update_policies(
        Policies([policy("no-kv", {"to": "kv", "action": "deny", "from": ["web"]})])
    )
    other = await trio.open_tcp_stream(*tcp)
    with trio.fail_after(5):
        try:
            await other.send_all(b"x")
            assert await other.receive_some(100) == b""  # closed, nothing relayed
        except trio.BrokenResourceError:
            pass  # or reset, with our byte unread
    await stream.send_all(b"again")
    with trio.fail_after(5):
        assert await stream.receive_some(100) == b"again"
    assert mesh.b.metrics.denied[("kv", "no-kv")] >= 1
    await stream.aclose()
    await other.aclose()


async def test_alpn_says_what_a_connection_carries(nursery: trio.Nursery) -> None:
    mesh = await start_mtls_mesh(nursery)
    roots = (mesh.pki.ca.cert_der,)
    own = mesh.pki.workload("n1", "web")
    req = b"GET /name HTTP/1.1\r\nHost: api\r\n\r\n"
    out = await in_thread(tls_exchange, mesh.inbound, own, roots, "api", req, "gossipmesh-tunnel/1")
    assert out.startswith(b"HTTP/1.1 400") and mesh.backends["api"][0].requests == 0


async def test_migration_mode_lets_plaintext_in_as_an_anonymous_caller_and_counts_it(
    nursery: trio.Nursery,
) -> None:
    mesh = await start_mtls_mesh(nursery, b_plaintext=True)
    assert mesh.b.metrics.plaintext_enabled == 1 and mesh.a.metrics.plaintext_enabled == 0
    be = mesh.backends["api"][0]
    dest = f"{be.host}:{be.port}"
    req = f"GET /name HTTP/1.1\r\nHost: api\r\nx-gossipmesh-dest: {dest}\r\n\r\n".encode()
    out = await raw_exchange(mesh.inbound, req)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"be1")
    assert mesh.b.metrics.plaintext == {"inbound_accepted": 1}
    # Members still cross with mTLS; a policy naming callers never matches an anonymous one.
    c = await Client.open(mesh.outbound)
    assert (await c.request("GET", "/name", "api")).status == 200
    assert mesh.b.metrics.tls_handshakes == {(INBOUND, "ok"): 1}
    mesh.b.update_policies(
        Policies([policy("web-only", {"to": "api", "from": ["web"]})], {"api": "deny"})
    )
    assert (await c.request("GET", "/name", "api")).status == 200
    out = await raw_exchange(mesh.inbound, req)
    assert out.startswith(b"HTTP/1.1 403") and b"an unauthenticated caller" in out
    await c.aclose()


async def test_a_services_own_outbound_listener_presents_that_service(
    nursery: trio.Nursery,
) -> None:
    hosts = {"n1": {"web", "admin"}, "n2": {"api"}}
    mesh = await start_mtls_mesh(
        nursery, a_services=("web", "admin"), hosts=hosts,
        outbound_listeners={"admin": ("127.0.0.1", 0)},
    )  # fmt: skip
    mesh.b.update_policies(
        Policies([policy("no-admin", {"to": "api", "action": "deny", "from": ["admin"]})])
    )
    shared = await Client.open(mesh.outbound)  # two local services: the node's own identity
    own = await Client.open(mesh.a_addr.services["admin"])
    assert (await shared.request("GET", "/name", "api")).status == 200
    r = await own.request("GET", "/name", "api")
    assert r.status == 403 and b"spiffe://mesh/svc/admin" in r.body
    await shared.aclose()
    await own.aclose()
    # One pooled connection per presented identity.
    assert mesh.a.metrics.tls_handshakes == {(OUTBOUND, "ok"): 2}


async def test_large_bodies_cross_the_encrypted_hop_both_ways(nursery: trio.Nursery) -> None:
    mesh = await start_mtls_mesh(nursery)
    c = await Client.open(mesh.outbound)
    n = 3 * 1024 * 1024  # many TLS records, and writes the socket cannot take at once
    r = await c.request("GET", f"/big?n={n}", "api")
    assert r.status == 200 and len(r.body) == n
    body = bytes(range(256)) * (n // 256)
    r = await c.request("POST", "/upload", "api", body=body)
    assert r.status == 200 and r.body == f"{hashlib.sha256(body).hexdigest()} {n}".encode()
    await c.aclose()


async def test_an_upgraded_outbound_reaches_a_plaintext_inbound_only_in_migration_mode(
    nursery: trio.Nursery,
) -> None:
    be = Backend("old")
    await nursery.start(be.run)
    old = Proxy(
        outbound=None, inbound=("127.0.0.1", 0), local_services={"api": [(be.host, be.port)]}
    )
    old_addr = await nursery.start(old.serve)  # an agent not yet upgraded: plaintext inbound
    pki = Pki(Wall())
    table = build_route_table({}, {}, {"api": [Endpoint("n2", be.host, be.port,
                                                        inbound=old_addr.inbound)]})  # fmt: skip
    old.update_table(table)
    for migrating in (False, True):
        a = Proxy(outbound=("127.0.0.1", 0), inbound=None, mtls=MeshTls(
            pki.credentials("n1", ["web"]), pki.authority("n1", HOSTS),
            plaintext_inbound=migrating))  # fmt: skip
        a_addr = await nursery.start(a.serve)
        a.update_table(table)
        c = await Client.open(a_addr.outbound)
        r = await c.request("GET", "/name", "api")
        await c.aclose()
        if migrating:
            assert (r.status, r.body) == (200, b"old")
            assert a.metrics.plaintext == {"outbound_fallback": 1}
        else:
            assert r.status in (502, 503) and a.metrics.plaintext == {}
    assert be.requests == 1


def tasks_running(prefix: str) -> int:
    """Trio tasks alive now whose coroutine's qualified name starts with ``prefix``."""
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += task.coro.cr_code.co_qualname.startswith(prefix)  # type: ignore[attr-defined]
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


async def test_silent_inbound_connections_hold_no_task_and_close_at_the_head_deadline(
    nursery: trio.Nursery,
) -> None:
    # A port scan or slow clients: connections that never send a byte. The engine counts them
    # and waits for their first byte without a task or OpenSSL state (issue 13: 5,000 of them
    # took an agent from 68 to 309 MiB), and the head deadline closes them, counted.
    mesh = await start_mtls_mesh(nursery, b_limits=ProxyLimits(head_timeout_ms=1500))
    silent = [await trio.open_tcp_stream(*mesh.inbound) for _ in range(50)]
    c = await Client.open(mesh.outbound)
    assert (await c.request("GET", "/name", "api")).body == b"be1"  # the hop still works
    await c.aclose()
    await wait_for("all counted", lambda: mesh.b.metrics.listener_connections[INBOUND] >= 51)
    assert tasks_running("Handshakes.") <= 1  # at most the live hop's, none per silent one
    for s in silent:
        with trio.fail_after(5):
            assert await s.receive_some(100) == b""  # closed by the agent, nothing said
        await s.aclose()
    await wait_for("counted", lambda: mesh.b.metrics.head_timeouts.get(INBOUND) == 50)
    assert (INBOUND, "timeout") not in mesh.b.metrics.tls_handshakes  # no handshake was begun
