"""What the SWIM core asks an authority: sign our own claims, check everyone else's.

Theory of operation
-------------------
Membership is a set of claims (DESIGN-11 D3). What a member says about *itself* -- alive at this
incarnation, at this address, with this metadata -- is an ``AliveClaim`` signed with its node key,
and travels with its node certificate, so any receiver can check it without having met the
subject. What a member says about *another* -- suspect, dead -- is an ``Accusation`` signed by the
accuser, whom the receiver must already know (its certificate came with its own alive claim). A
voluntary leave is an accusation the subject signs about itself.

The core stays free of cryptography: it hands claims, certificates (DER bytes) and signatures to
an injected ``Authority`` and gets back ``None`` (valid) or a short reason, which it counts as
``reject.<reason>``. The agent's and the simulator's authority is
``gossipmesh.identity.membership.MembershipAuthority`` (X.509 chains to the cluster's roots,
ECDSA P-256). What the core decides itself, and the authority never sees: which claims are news
(old news is dropped before any signature is checked), the incarnation bound on accusations,
whether an accuser is a member we know, and how much verification one input may cost
(``budget.py``).

The core keeps each member's certificate and latest signed claims in its ``Member`` snapshot
(``member.Proof``), so relaying them in push-pull needs nothing from the authority.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from gossipmesh.ids import Address


class AccusationKind(enum.Enum):
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"  # signed by the subject itself: it announced its own departure


@dataclass(frozen=True, slots=True)
class AliveClaim:
    """ "I, ``name``, am alive at ``incarnation``, reachable at ``address``, with ``meta``"."""

    name: str
    incarnation: int
    address: Address
    meta: bytes


@dataclass(frozen=True, slots=True)
class Accusation:
    """ "I, ``accuser``, hold ``subject`` at ``incarnation`` to be ``kind``"."""

    kind: AccusationKind
    subject: str
    incarnation: int
    accuser: str


class Authority(Protocol):
    """Signs this node's claims and checks other members' (see the module docstring).

    The ``verify_*`` and ``check_certificate`` methods never raise on hostile input: they return
    ``None`` when the claim (or certificate) is valid *now*, else a reason slug such as
    ``"bad_signature"``, ``"cert.expired"``, ``"cert.wrong_name"`` or ``"cert.revoked"``. They
    may memoise (they are pure functions of their arguments, the trust roots, the revocations
    and the wall clock).
    """

    @property
    def certificate(self) -> bytes:
        """This node's own certificate (DER), sent with every alive claim it signs."""
        ...

    def sign_alive(self, claim: AliveClaim) -> bytes:
        """Our signature over our own alive claim (raises if ``claim.name`` is not us)."""
        ...

    def sign_accusation(self, claim: Accusation) -> bytes:
        """Our signature over an accusation we make (``claim.accuser`` is us)."""
        ...

    def check_certificate(self, name: str, cert: bytes) -> str | None:
        """Is ``cert`` a valid node certificate for exactly node ``name``, now?"""
        ...

    def verify_alive(self, claim: AliveClaim, cert: bytes, signature: bytes) -> str | None:
        """Is ``cert`` valid for ``claim.name`` and ``signature`` its key's over the claim?"""
        ...

    def verify_accusation(self, claim: Accusation, cert: bytes, signature: bytes) -> str | None:
        """Is ``cert`` valid for ``claim.accuser`` and ``signature`` its key's over the claim?"""
        ...
