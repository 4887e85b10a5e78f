"""``telemetry/mesh``: the mesh-wide span sampling setting."""

from __future__ import annotations

import pytest

from gossipmesh.config.schema import TelemetryConfig, check_entry, to_body, validate_entity
from gossipmesh.errors import ConfigValidationError


def test_defaults_round_trip_and_ratio() -> None:
    t = validate_entity("telemetry", "mesh", {})
    assert isinstance(t, TelemetryConfig) and t.trace_sample_per_million == 10_000
    assert t.trace_sample_ratio == 0.01
    full = validate_entity("telemetry", "mesh", {"trace_sample_per_million": 1_000_000})
    assert validate_entity("telemetry", "mesh", to_body(full)) == full
    assert full.trace_sample_ratio == 1.0


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("other", {}, "key"),  # one entity: telemetry/mesh
        ("mesh", {"trace_sample_per_million": 1_000_001}, "telemetry.trace_sample_per_million"),
        ("mesh", {"trace_sample_per_million": 0.5}, "telemetry.trace_sample_per_million"),
        ("mesh", {"trace_sample_per_million": True}, "telemetry.trace_sample_per_million"),
        ("mesh", {"sample": 1}, "telemetry.sample"),
    ],
)
def test_refusals_name_the_field(name: str, body: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigValidationError) as err:
        check_entry(f"telemetry/{name}", body)
    assert err.value.field == field
