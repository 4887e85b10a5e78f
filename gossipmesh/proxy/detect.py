"""Protocol detection on an HTTP listener: HTTP/2 prior knowledge or HTTP/1.1, on one port.

Theory of operation
-------------------
An HTTP/2 client with prior knowledge (h2c, and every gRPC client without TLS) opens with the
24-byte connection preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` (RFC 9113 §3.4); an HTTP/1.1
client opens with a request line, whose method is never ``PRI``. So the first bytes of a
connection decide, and only the first read of a connection is looked at: a connection whose
first byte is not ``P`` is HTTP/1.1 at no cost beyond one comparison. A first read that is a
strict prefix of the preface (a client writing byte by byte, or ``P`` of ``POST``) is
``MAYBE``: the caller reads on, at most ``len(PREFACE)`` bytes, within a short deadline
(``ProxyLimits.detect_timeout_ms``), then asks again. Pure: bytes in, a verdict out.
"""

from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

HTTP1, H2, MAYBE = range(3)


def sniff(first: bytes | bytearray | memoryview) -> int:
    """``H2`` if ``first`` begins with the preface, ``MAYBE`` if it is a strict prefix of it,
    else ``HTTP1``."""
    head = bytes(first[: len(PREFACE)])
    if head == PREFACE:
        return H2
    if len(head) < len(PREFACE) and PREFACE.startswith(head) and head:
        return MAYBE
    return HTTP1


__all__ = ["H2", "HTTP1", "MAYBE", "PREFACE", "sniff"]
