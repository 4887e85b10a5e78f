"""The authority kinds' schema: cert/FP, revocation/FP, trust/root/FP (config/trust.py)."""

from __future__ import annotations

import base64
import time

import pytest

from gossipmesh.config.schema import check_entry, to_body, validate_key
from gossipmesh.config.trust import cert_key, revocation_key, root_key
from gossipmesh.errors import ConfigValidationError
from gossipmesh.identity import CaCredentials, OperatorCredentials, fingerprint

NOW = int(time.time() * 1000)
CA = CaCredentials.generate("prod", now_ms=NOW)
OP = OperatorCredentials.issue(CA, "alice", now_ms=NOW)


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


def test_valid_bodies_round_trip() -> None:
    cases = {
        cert_key(fingerprint(OP.cert_der)): {"der": b64(OP.cert_der)},
        revocation_key(fingerprint(OP.cert_der)): {"kind": "operator", "name": "alice",
                                                   "mode": "compromised", "reason": "laptop"},
        root_key(fingerprint(CA.cert_der)): {"der": b64(CA.cert_der), "state": "distrusted"},
    }  # fmt: skip
    for key, body in cases.items():
        check_entry(key, body)
        entity = validate_key(key, body)
        assert validate_key(key, to_body(entity)) == entity


@pytest.mark.parametrize(
    ("key", "body", "field"),
    [
        ("cert/abc", {"der": "x"}, "key"),
        (cert_key(fingerprint(OP.cert_der)), {"der": b64(CA.cert_der)}, "cert.der"),
        (cert_key(fingerprint(CA.cert_der)), {"der": b64(CA.cert_der)}, "cert.der"),
        (cert_key(fingerprint(OP.cert_der)), {"der": "%%%"}, "cert.der"),
        (cert_key(fingerprint(OP.cert_der)), {"der": b64(OP.cert_der), "x": 1}, "cert.x"),
        (revocation_key(bytes(32)), {"kind": "root", "name": "x"}, "revocation.kind"),
        (revocation_key(bytes(32)), {"kind": "node"}, "revocation.name"),
        (revocation_key(bytes(32)), {"kind": "node", "name": "n", "mode": "x"}, "revocation.mode"),
        ("trust/" + "a" * 64, {"der": b64(CA.cert_der)}, "key"),
        (root_key(fingerprint(CA.cert_der)), {"der": b64(OP.cert_der)}, "trust.der"),
        (
            root_key(fingerprint(CA.cert_der)),
            {"der": b64(CA.cert_der), "state": "?"},
            "trust.state",
        ),
    ],
)
def test_bad_bodies_name_the_field(key: str, body: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigValidationError) as err:
        check_entry(key, body)
    assert err.value.field == field, err.value
