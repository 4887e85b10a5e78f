"""``telemetry/mesh``: the mesh-wide observability settings (one entity, written like any other).

``trace_sample_per_million`` (0-1,000,000, default 10,000 = 1 %): the share of traces whose hops
export a span, where an agent exports at all (``--otlp-endpoint``). Every agent applies the same
test to the same trace id (its low 64 bits against the ratio), so a trace is exported whole or
not at all, whichever agents it crosses; a trace whose ``traceparent`` says "not sampled" is
never exported. An integer, because the signed document carries no floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gossipmesh.config.fields import read_int, reject_unknown
from gossipmesh.errors import ConfigValidationError

TELEMETRY_NAME = "mesh"  # the one entity of this kind: the settings are mesh-wide
PER_MILLION = 1_000_000
DEFAULT_TRACE_SAMPLE_PER_MILLION = 10_000


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    name: str = TELEMETRY_NAME
    trace_sample_per_million: int = DEFAULT_TRACE_SAMPLE_PER_MILLION

    kind: Literal["telemetry"] = field(default="telemetry", init=False)

    @property
    def trace_sample_ratio(self) -> float:
        return self.trace_sample_per_million / PER_MILLION


def parse_telemetry(name: str, body: Mapping[str, Any]) -> TelemetryConfig:
    p = "telemetry"
    if name != TELEMETRY_NAME:
        raise ConfigValidationError("key", f"the telemetry settings are telemetry/{TELEMETRY_NAME}")
    reject_unknown(body, ("trace_sample_per_million",), p)
    ratio = read_int(body.get("trace_sample_per_million", DEFAULT_TRACE_SAMPLE_PER_MILLION),
                     f"{p}.trace_sample_per_million", 0, PER_MILLION)  # fmt: skip
    return TelemetryConfig(name, ratio)


def telemetry_body(entity: TelemetryConfig) -> dict[str, Any]:
    return {"trace_sample_per_million": entity.trace_sample_per_million}
