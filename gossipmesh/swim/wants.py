"""``Wants``: asking a member for one claim it holds, and answering such asks.

Theory of operation
-------------------
Two kinds of news we cannot check leave us behind a member that the sender is not behind: a claim
whose certificate reference we cannot resolve (the member renewed its certificate, and we missed
the claim that carried it), and an accusation above the incarnation bound (we missed the
subject's refutations; ``rumours.py``). The sender holds what we lack -- it checked that news --
so we ask it with a small unsigned ``Want(name, incarnation, cert)``, and it answers with the
subject's own signed alive claim, if newer than ``incarnation`` (with the certificate if asked):
a claim the subject signed, checked like any other, so a captured node can answer only with the
truth or with nothing.

We ask at most once per subject per ``WANT_INTERVAL_MS`` (about ``WANTS_REMEMBERED`` subjects
remembered); answers cost bytes, not checks, and each source's come out of its own token bucket
(``NodeState.want_budget``), so a spoofed source gets at most ``verify_burst`` answers.
"""

from __future__ import annotations

from gossipmesh.ids import Address, Millis
from gossipmesh.swim.effects import Effect
from gossipmesh.swim.fields import cert_ref
from gossipmesh.swim.messages import Alive, Want, encode
from gossipmesh.swim.state import NodeState

WANT_INTERVAL_MS = 1_000
WANTS_REMEMBERED = 1_024


class Wants:
    """Asks and answers for one node (see the module docstring)."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self._asked: dict[str, Millis] = {}  # subject -> when we last asked about it

    def ask(
        self, name: str, incarnation: int, cert: bool, now_ms: Millis, out: list[Effect]
    ) -> None:
        """Ask the sender of the packet being handled for ``name``'s own claim (``Want``), at
        most once per subject per ``WANT_INTERVAL_MS``."""
        st = self.state
        src = st.source
        if src is None:
            return
        wanted = self._asked
        last = wanted.get(name)
        if last is not None and now_ms - last < WANT_INTERVAL_MS:
            return
        if last is None and len(wanted) >= WANTS_REMEMBERED:
            del wanted[next(iter(wanted))]
        wanted[name] = now_ms
        st.count("wants.sent")
        st.send(src, encode(Want(name, incarnation, cert)), out)

    def answer(self, src: Address, msg: Want, now_ms: Millis, out: list[Effect]) -> None:
        """Answer a ``Want`` with the subject's own signed claim we hold, if it is newer than
        the asker's (or the asker lacks its certificate). Costs us bytes, not checks, so each
        source's answers come out of their own budget."""
        st = self.state
        if msg.name == st.name:
            if st.leaving:
                return
            alive = st.self_alive()
        else:
            m = st.table.get(msg.name)
            if m is None or m.proof is None:
                return
            p = m.proof
            alive = Alive(m.name, p.alive_incarnation, m.address, m.meta, p.cert,
                          p.alive_signature)  # fmt: skip
        if alive.incarnation <= msg.incarnation and not msg.cert:
            return
        if not st.want_budget.take(src, now_ms):
            st.count("wants.refused")
            return
        if not msg.cert:
            alive = Alive(alive.name, alive.incarnation, alive.address, alive.meta,
                          cert_ref(alive.cert), alive.signature)  # fmt: skip
        st.count("wants.answered")
        st.send(src, encode(alive), out)
