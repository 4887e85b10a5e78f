"""Agent settings: one frozen dataclass, built from command-line flags over an optional TOML file.

Flags win over the file; the file wins over defaults. Every problem is a ``UsageError`` naming the
setting, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossipmesh.agent.sidecar_config import SidecarSettings, parse_sidecar_settings
from gossipmesh.errors import UsageError
from gossipmesh.ids import DEFAULT_ADMIN_PORT, DEFAULT_GOSSIP_PORT, MAX_NODE_NAME_BYTES, Address

PROFILES = ("lan", "wan", "local")
LOG_LEVELS = ("debug", "info", "warn", "error")

# The keys a TOML file (and the flag dict) may hold; hyphens and underscores are both accepted.
# examples/agent.toml shows every one (tests/test_examples.py checks it).
SETTING_KEYS = {
    "name",
    "bind",
    "advertise",
    "join",
    "admin",
    "data_dir",
    "encrypt",
    "encrypt_file",
    "keyring",
    "tls_dir",
    "profile",
    "cluster",
    "log_level",
    "seed",
    # The config replica's (gossipmesh/agent/replica.py) and fault injection (agent/faults.py).
    "rebuild_config",
    "config_sync_interval_ms",
    "config_gc_grace_ms",
    "enable_fault_injection",
    # The sidecar's (gossipmesh/agent/sidecar_config.py): proxy listeners and local instances.
    "outbound",
    "inbound",
    "no_proxy",
    "dataplane",
    "service",
    "listener",
    "inbound_plaintext",
    "workload_lifetime_ms",
    "proxy_workers",
    # Per-request observability (sidecar_config.py): the access log and span export.
    "access_log",
    "access_log_sample_ratio",
    "access_log_max_lines_per_s",
    "otlp_endpoint",
}


@dataclass(frozen=True, slots=True)
class AgentSettings:
    name: str = field(default_factory=socket.gethostname)
    bind: Address = Address("0.0.0.0", DEFAULT_GOSSIP_PORT)
    advertise: Address | None = None
    join: tuple[Address, ...] = ()
    admin: Address = Address("127.0.0.1", DEFAULT_ADMIN_PORT)
    data_dir: Path | None = None
    encrypt: str | None = None  # base64 key, as `gossipmesh keygen` prints it
    encrypt_file: Path | None = None  # a file holding that key (not on the command line)
    # Where ``encrypt`` came from: "flag" (visible in /proc/PID/cmdline: the agent warns) or
    # "config PATH" (the agent warns when PATH is readable by other users). Not a setting.
    encrypt_origin: str | None = None
    keyring: Path | None = None  # JSON ring file (list of base64 keys, primary first)
    tls_dir: Path | None = None  # node.key, node.crt, roots.pem (gossipmesh ca issue-node)
    profile: str = "lan"
    cluster: str = "default"
    log_level: str = "info"
    seed: int | None = None  # seeds the core's random.Random; tests and simulations only
    rebuild_config: bool = False  # a damaged replica.db is moved aside; start empty and resync
    config_sync_interval_ms: int = 3000  # anti-entropy period (scaled up past 32 members)
    config_gc_grace_ms: int = 3600 * 1000  # a causally stable tombstone is kept this long
    enable_fault_injection: bool = False  # /v1/faults; only with a loopback admin address
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)

    def advertised(self) -> Address:
        """The address peers reach us at: --advertise, else --bind (must then be concrete)."""
        return self.advertise if self.advertise is not None else self.bind


def load_settings(flags: Mapping[str, Any], config_file: Path | None = None) -> AgentSettings:
    """Merge ``flags`` (None means "not given") over ``config_file`` over the defaults."""
    raw: dict[str, Any] = {}
    if config_file is not None:
        raw.update(_read_toml(config_file))
        if raw.get("encrypt") is not None:
            raw["encrypt_origin"] = f"config {config_file}"
    key_flags = [k for k in ("encrypt", "encrypt_file") if flags.get(k) is not None]
    if key_flags:  # a key given on the command line replaces the file's, whichever form
        for key in ("encrypt", "encrypt_file", "encrypt_origin"):
            raw.pop(key, None)
        if "encrypt" in key_flags:
            raw["encrypt_origin"] = "flag"
    for key, value in flags.items():
        norm = key.replace("-", "_")
        if norm not in SETTING_KEYS:
            raise UsageError(f"unknown setting {key!r}")
        if value is None or (norm == "join" and not value):
            continue
        raw[norm] = value
    return _build(raw)


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only with --config: an agent run on flags alone never loads the parser

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    out: dict[str, Any] = {}
    for key, value in data.items():
        norm = key.replace("-", "_")
        if norm not in SETTING_KEYS:
            raise UsageError(f"config file {path}: unknown setting {key!r}")
        out[norm] = value
    return out


def _str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{key} must be a string")
    return value


def _build(raw: dict[str, Any]) -> AgentSettings:
    kwargs: dict[str, Any] = {}
    name = _str(raw, "name")
    if name is not None:
        if not name or len(name.encode()) > MAX_NODE_NAME_BYTES:
            raise UsageError(f"name must be 1-{MAX_NODE_NAME_BYTES} bytes")
        kwargs["name"] = name
    for key, default_port in (("bind", DEFAULT_GOSSIP_PORT), ("advertise", DEFAULT_GOSSIP_PORT)):
        text = _str(raw, key)
        if text is not None:
            kwargs[key] = _addr(key, text, default_port)
    admin = _str(raw, "admin")
    if admin is not None:
        kwargs["admin"] = _addr("admin", admin, DEFAULT_ADMIN_PORT)
    join = raw.get("join")
    if join is not None:
        if isinstance(join, str):
            join = [join]
        if not isinstance(join, list | tuple) or not all(isinstance(j, str) for j in join):
            raise UsageError("join must be a list of HOST:PORT strings")
        kwargs["join"] = tuple(_addr("join", j, DEFAULT_GOSSIP_PORT) for j in join)
    for key in ("data_dir", "keyring", "tls_dir", "encrypt_file"):
        text = _str(raw, key)
        if text is not None:
            kwargs[key] = Path(text).expanduser()
    encrypt = _str(raw, "encrypt")
    if encrypt is not None:
        from gossipmesh.crypto import decode_key

        try:
            decode_key(encrypt)
        except UsageError as exc:
            raise UsageError(f"--encrypt: {exc}") from exc
        kwargs["encrypt"] = encrypt
        kwargs["encrypt_origin"] = raw.get("encrypt_origin")
        if "encrypt_file" in kwargs:
            raise UsageError("give the key once: --encrypt or --encrypt-file, not both")
    profile = _str(raw, "profile")
    if profile is not None:
        if profile not in PROFILES:
            raise UsageError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
        kwargs["profile"] = profile
    cluster = _str(raw, "cluster")
    if cluster is not None:
        if not cluster or len(cluster.encode()) > 64:
            raise UsageError("cluster name must be 1-64 bytes")
        kwargs["cluster"] = cluster
    level = _str(raw, "log_level")
    if level is not None:
        if level not in LOG_LEVELS:
            raise UsageError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        kwargs["log_level"] = level
    seed = raw.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UsageError("seed must be an integer")
        kwargs["seed"] = seed
    _build_replica(raw, kwargs)
    kwargs["sidecar"] = parse_sidecar_settings(raw)
    return AgentSettings(**kwargs)


def _build_replica(raw: dict[str, Any], kwargs: dict[str, Any]) -> None:
    for key in ("rebuild_config", "enable_fault_injection"):
        value = raw.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise UsageError(f"{key} must be true or false")
            kwargs[key] = value
    for key, lo, hi in (("config_sync_interval_ms", 100, 600_000),
                        ("config_gc_grace_ms", 1000, 365 * 24 * 3600 * 1000)):  # fmt: skip
        value = raw.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise UsageError(f"{key} must be an integer of milliseconds in {lo}-{hi}")
            kwargs[key] = value
    if kwargs.get("enable_fault_injection"):
        # It lets any caller of the admin API cut this node off: never expose it off the host.
        import ipaddress

        admin = kwargs.get("admin", Address("127.0.0.1", DEFAULT_ADMIN_PORT))
        try:
            loopback = ipaddress.ip_address(admin.host).is_loopback
        except ValueError:
            loopback = admin.host == "localhost"
        if not loopback:
            raise UsageError(
                f"--enable-fault-injection needs a loopback --admin address, not {admin.host}"
            )


def _addr(key: str, text: str, default_port: int) -> Address:
    try:
        return Address.parse(text, default_port=default_port)
    except UsageError as exc:
        raise UsageError(f"--{key.replace('_', '-')}: {exc}") from exc
