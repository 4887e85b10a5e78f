"""Admin API routes of the config replica (the CLI's ``gossipmesh config ...`` is their client).

| method | path                              | what |
|--------|-----------------------------------|------|
| GET    | /v1/config?prefix=P               | effective entities under P, keys that are void (and why), the digest |
| GET    | /v1/config/KIND/NAME              | value, signer, every sibling (winner first) with its signer and void reason |
| POST   | /v1/config/prepare                | ``{"items": {"KIND/NAME": body or null}, "certificate": B64}``: the unsigned proposal |
| POST   | /v1/config/commit                 | ``{"entries": [signed entries]}``: verified, applied as one delta, 200 once durable |
| PUT, DELETE /v1/config/KIND/NAME; POST /v1/config/apply | refused (403 ``unsigned``): writes are signed |
| GET    | /v1/config-history/KIND/NAME      | versions seen here (current siblings first), with writer, signer and time |
| GET    | /v1/config-conflicts              | keys with concurrent siblings, and which one wins |
| GET    | /v1/trust                         | roots (configured, from the document, trusted now) and revocations |

**Two-phase writes** (DESIGN-11 D4). ``prepare`` validates the items and answers with the exact
entries this agent would write (``config.signing.WireEntry`` JSON), the current signed siblings of
those keys, their signers' certificates and the document's root statements; with
``certificate`` (the operator's, base64 DER) it adds the ``cert/FP`` entry the document lacks.
The operator checks and signs them (``config.signing.ProposalSigner``) and ``commit`` re-verifies
everything: in range, under this agent's writer, still current (else 409 ``stale``: prepare
again), signature and chain, the signer's right to the key, not revoked or expired (else 403 with
the reason), valid values. Only then is the batch applied and persisted.

Errors are one line naming the field (``items.route/web: route.destinations[0].weight: ...``,
``entries[1].hlc.wall_ms: ...``): 400 ``invalid``, 403 a refusal slug, 409 ``stale``, 413
``too_large``, 503 ``store_failed``. Every refused write is counted under
``config.refused.REASON`` (``/v1/health``) and changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import sqlite3
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import unquote

from gossipmesh.agent.config_json import entry_view, from_wire, proposal_json, version_view
from gossipmesh.agent.http import HTTPError, JSONResponse, Request, Response
from gossipmesh.config.authority import TrustPolicy
from gossipmesh.config.schema import parse_key, validate_key
from gossipmesh.config.signing import WireEntry
from gossipmesh.config.trust import cert_key
from gossipmesh.crdt.document import Entry, RefusedWriteError, StaleWriteError
from gossipmesh.crdt.entries import MAX_BATCH_ENTRIES, REVOCATION_PREFIX
from gossipmesh.errors import ConfigValidationError, LimitExceededError, UsageError
from gossipmesh.identity import CertificateRejected, IdKind, parse_certificate

if TYPE_CHECKING:
    from gossipmesh.agent.replica import ConfigReplica

MAX_APPLY_ENTITIES = 1000
MAX_LOGGED_KEYS = 50  # keys named in one config_written event (``count`` has them all)
KINDS = (
    "service/",
    "route/",
    "policy/",
    "revocation/",
    "trust/",
    "telemetry/",
)  # not cert/: it rides along
UNSIGNED = (
    "config writes must be signed by an operator: POST /v1/config/prepare, sign the entries, "
    "POST /v1/config/commit (the CLI does this with --operator-key or $GOSSIPMESH_OPERATOR_KEY)"
)


def _key_from_path(path: str, prefix: str) -> str:
    key = unquote(path[len(prefix) :])
    try:
        parse_key(key)
    except ConfigValidationError as exc:
        raise HTTPError(400, "invalid", str(exc)) from exc
    return key


def install_config_routes(replica: ConfigReplica) -> None:
    agent = replica.agent
    identity = agent.identity

    def refuse(reason: str, status: int, error: str, detail: str) -> NoReturn:
        agent.counters["config.refused"] += 1
        agent.counters[f"config.refused.{reason}"] += 1
        agent.log.warn("config_write_refused", reason=reason, detail=detail[:200])
        raise HTTPError(status, error, detail)

    def items_of(data: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
        unknown = sorted(set(data) - {"items", "certificate"})
        if unknown:
            refuse("invalid", 400, "invalid", f"{unknown[0]}: unknown field "
                   "(allowed: items, certificate)")  # fmt: skip
        raw = data.get("items")
        if not isinstance(raw, dict) or not raw:
            refuse("invalid", 400, "invalid", 'items: must be a non-empty object of "KIND/NAME"')
        if len(raw) > MAX_APPLY_ENTITIES:
            refuse("too_large", 413, "too_large", f"items: {len(raw)} is over the limit of "
                   f"{MAX_APPLY_ENTITIES} per write (MAX_APPLY_ENTITIES)")  # fmt: skip
        items: list[tuple[str, dict[str, Any] | None]] = []
        for key, body in sorted(raw.items()):
            try:
                kind, _ = parse_key(key)
                if body is not None:
                    if not isinstance(body, dict):
                        raise ConfigValidationError(kind, "must be an object or null")
                    validate_key(key, body)
            except ConfigValidationError as exc:
                refuse("invalid", 400, "invalid", f"items.{key}: {exc}")
            items.append((key, body))
        cert = data.get("certificate")
        if cert is not None:
            items += cert_item(cert, {k for k, _ in items})
        return items

    def cert_item(text: object, keys: set[str]) -> list[tuple[str, dict[str, Any] | None]]:
        """The operator's ``cert/FP`` entry when the document lacks it."""
        try:
            if not isinstance(text, str):
                raise ValueError("must be base64 text")
            der = base64.b64decode(text, validate=True)
            info = parse_certificate(der)
        except (binascii.Error, ValueError, CertificateRejected) as exc:
            refuse("invalid", 400, "invalid", f"certificate: not a certificate: {exc}")
        if info.kind is not IdKind.OPERATOR or info.spiffe_id.trust_domain != identity.cluster:
            refuse("invalid", 400, "invalid", f"certificate: {info.spiffe_id} is not an operator "
                   f"of cluster {identity.cluster!r}")  # fmt: skip
        key = cert_key(info.fingerprint)
        if key in keys or replica.doc.stored(key):
            return []
        return [(key, {"der": text})]

    async def prepare(req: Request) -> Response:
        items = items_of(req.json_object())
        if all(v is None and replica.doc.absent(k) for k, v in items if k.startswith(KINDS)):
            items = []  # only deletions of absent keys: nothing to write, not even a cert
        try:
            entries = replica.prepare(items)
        except LimitExceededError as exc:
            refuse("too_large", 413, "too_large", str(exc))
        except UsageError as exc:  # ConfigValidationError included: "field: reason"
            refuse("invalid", 400, "invalid", str(exc))
        except (OSError, sqlite3.Error) as exc:
            store_failed(exc)
        return JSONResponse(proposal_json(replica.doc, identity.cluster, agent.settings.name,
                                          replica.writer, entries))  # fmt: skip

    def store_failed(exc: BaseException) -> NoReturn:
        agent.counters["config.store_errors"] += 1
        agent.log.error("config_store_failed", error=repr(exc))
        raise HTTPError(503, "store_failed", f"the write could not be made durable: {exc}")

    async def commit(req: Request) -> Response:
        data = req.json_object()
        unknown = sorted(set(data) - {"entries"})
        if unknown:
            refuse("invalid", 400, "invalid", f"{unknown[0]}: unknown field (allowed: entries)")
        raw = data.get("entries")
        if not isinstance(raw, list) or not raw:
            refuse("invalid", 400, "invalid", "entries: must be a non-empty list")
        if len(raw) > MAX_BATCH_ENTRIES:
            refuse("too_large", 413, "too_large", f"entries: {len(raw)} is over the limit of "
                   f"{MAX_BATCH_ENTRIES} per commit")  # fmt: skip
        entries: list[Entry] = []
        for i, item in enumerate(raw):
            try:
                entries.append(from_wire(WireEntry.from_json(item, f"entries[{i}]")))
            except UsageError as exc:
                refuse("invalid", 400, "invalid", str(exc))
        try:
            result = replica.commit(entries)
        except StaleWriteError as exc:
            refuse("stale", 409, "stale", f"{exc}; prepare again")
        except RefusedWriteError as exc:
            refuse(exc.reason, 403, exc.reason, str(exc))
        except LimitExceededError as exc:
            refuse("too_large", 413, "too_large", str(exc))
        except UsageError as exc:
            refuse("invalid", 400, "invalid", str(exc))
        except (OSError, sqlite3.Error) as exc:
            store_failed(exc)
        written = {e.key: {"writer": e.writer, "counter": e.counter} for e in entries}
        # Who changed what, for the operator's audit trail (values stay out: they are in the
        # document, and a log is no place for a policy's or a route's details).
        agent.log.info("config_written", keys=sorted(written)[:MAX_LOGGED_KEYS],
                       count=len(written), deletes=sum(e.value is None for e in entries),
                       signers=sorted({e.signer.hex()[:16] for e in entries}),
                       voided=sorted(result.voided)[:MAX_LOGGED_KEYS])  # fmt: skip
        return JSONResponse({"written": written, "durable": True,
                             "voided": sorted(result.voided)})  # fmt: skip

    async def unsigned(req: Request) -> Response:
        refuse("unsigned", 403, "unsigned", UNSIGNED)

    async def list_config(req: Request) -> Response:
        prefix = (req.query.get("prefix") or [""])[0]
        doc = replica.doc
        entities = dict(replica.items(prefix))
        void = {}
        stored = doc.keys()
        for key in stored:
            if key.startswith(prefix) and doc.winner(key) is None:
                reasons = {doc.void_reason(e) for e in doc.stored(key)} - {None}
                if reasons:
                    void[key] = ", ".join(sorted(r for r in reasons if r))
        return JSONResponse({"entities": entities, "count": len(entities), "void": void,
                             **replica.digest()})  # fmt: skip

    async def get_one(req: Request) -> Response:
        key = _key_from_path(req.path, "/v1/config/")
        doc = replica.doc
        siblings = replica.siblings(key)
        winner = doc.winner(key)
        if not siblings or (winner is not None and winner.value is None):
            raise HTTPError(404, "not_found", f"{key} is not set")
        body: dict[str, Any] = {
            "key": key,
            "value": None if winner is None else winner.decoded(),
            "conflict": len({e.value for e in siblings if doc.void_reason(e) is None}) > 1,
            "siblings": [entry_view(doc, e, e is winner) for e in siblings],
            "void": None,
        }
        if winner is None:
            body["void"] = ", ".join(sorted({doc.void_reason(e) or "" for e in siblings}))
        else:
            body["version"] = entry_view(doc, winner, True)
        return JSONResponse(body)

    async def history(req: Request) -> Response:
        key = _key_from_path(req.path, "/v1/config-history/")
        return JSONResponse({"key": key, "versions": [version_view(replica.doc, v) for v in
                                                      replica.history(key)]})  # fmt: skip

    async def conflicts(req: Request) -> Response:
        doc = replica.doc
        out = [{"key": c.key, "winner": entry_view(doc, c.winner, True),
                "siblings": [entry_view(doc, e, e.dot == c.winner.dot) for e in c.siblings]}
               for c in replica.conflicts()]  # fmt: skip
        return JSONResponse({"conflicts": out, "count": len(out)})

    async def trust(req: Request) -> Response:
        doc = replica.doc
        policy = doc.policy
        store = identity.trust
        roots = []
        if isinstance(policy, TrustPolicy):
            for fp, state in sorted(policy.roots.items()):
                der = policy.root_ders.get(fp)
                roots.append({"fingerprint": fp.hex(), "der": base64.b64encode(der).decode()
                              if der else None, "until_ms": state.until_ms,
                              "compromised": state.compromised,
                              "trusted_now": fp in store.root_fingerprints})  # fmt: skip
        revocations = [{"fingerprint": e.key[len(REVOCATION_PREFIX) :], **(e.decoded() or {}),
                        "at_ms": e.hlc.wall_ms, "void": doc.void_reason(e)}
                       for e in doc.stored_under(REVOCATION_PREFIX) if e.value is not None]  # fmt: skip
        return JSONResponse({"roots": roots, "revocations": revocations,
                             "revoked_now": sorted(fp.hex() for fp in store.revoked),
                             "trust_version": store.version})  # fmt: skip

    r = agent.router
    r.add("GET", "/v1/config", list_config)
    r.add("POST", "/v1/config/prepare", prepare)
    r.add("POST", "/v1/config/commit", commit)
    r.add("POST", "/v1/config/apply", unsigned)
    r.add_prefix("GET", "/v1/config/", get_one)
    r.add_prefix("PUT", "/v1/config/", unsigned)
    r.add_prefix("DELETE", "/v1/config/", unsigned)
    r.add_prefix("GET", "/v1/config-history/", history)
    r.add("GET", "/v1/config-conflicts", conflicts)
    r.add("GET", "/v1/trust", trust)
