"""Settings: defaults, then a TOML file, then ``WHIP_GATEWAY_*`` env, then flags.

Every setting is validated at start; ``load_settings`` turns a validation
failure into ``SettingsError`` whose message is one line, so ``serve``
can print it instead of a traceback.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    NoDecode,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

STREAM_NAME_PATTERN = r"^[A-Za-z0-9_.~-]{1,128}$"


class SettingsError(ValueError):
    """A bad setting; the message names it and says why, on one line."""


class IceServer(BaseModel):
    """One ``Link: <url>; rel="ice-server"`` entry (RFC 9725 section 4.6)."""

    url: str
    username: str | None = None
    credential: str | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.split(":", 1)[0] in ("stun", "stuns", "turn", "turns"):
            raise ValueError("must be a stun:, stuns:, turn: or turns: URL")
        return value

    @model_validator(mode="after")
    def _turn_needs_credentials(self) -> "IceServer":
        if self.url.startswith("turn") and not (self.username and self.credential):
            raise ValueError("a TURN server needs username and credential")
        return self


class WebhookSettings(BaseModel):
    """One receiver of event webhooks (signed the Standard Webhooks way)."""

    url: str
    secret: str = Field(description="whsec_ + base64 of the HMAC key (Standard Webhooks)")
    events: list[str] = Field(default_factory=list, description="event types it wants; empty: all")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        from gateway.core.webhook_signing import secret_key

        try:
            key = secret_key(value)
        except ValueError:
            raise ValueError("must be whsec_ followed by base64") from None
        if len(key) < 16:
            raise ValueError("must hold at least 16 bytes of key")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        from gateway.core.webhooks import EVENT_TYPES

        unknown = [e for e in value if e not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event(s) {unknown} (known: {list(EVENT_TYPES)})")
        return value


NodeRole = Literal["ingest", "egress", "both"]


class JanusNodeSettings(BaseModel):
    """A Janus node the gateway uses instead of starting its own."""

    url: str
    role: NodeRole = Field("both", description="ingest: publishers; egress: viewers; both")
    admin_url: str | None = None
    admin_secret: str | None = None
    api_secret: str | None = None
    plugin_admin_key: str | None = None
    ws_url: str | None = Field(
        None, description="ws(s):// address of the node's WebSocket transport (subprotocol "
        "janus-protocol), used when janus_transport is websocket; url stays for /info",
    )
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    region: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="region label: viewers of this region are placed here; none: any region",
    )
    max_viewers: int = Field(0, ge=0, description="egress: most viewers at once; 0: no limit")
    max_out_bitrate: int = Field(
        0, ge=0, description="egress: outbound budget in bit/s, each viewer counted at its "
        "stream's bitrate; 0: no limit",
    )

    @field_validator("url", "admin_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("ws_url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("ws", "wss") or not parts.netloc:
                raise ValueError(f"{value!r} is not a ws(s) URL")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHIP_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = Field(
        None, description="Base URL clients use to reach the gateway; Location headers use it"
    )
    janus: list[JanusNodeSettings] = Field(
        default_factory=list, description="Janus nodes; empty means: start a managed local Janus"
    )
    janus_binary: str = "/usr/bin/janus"
    janus_ice_enforce_list: str | None = Field(
        None, description="Interfaces the managed Janus gathers candidates on"
    )
    janus_ice_lite: bool = Field(False, description="managed ingest Janus: ICE-lite mode")
    janus_separate_egress: bool = Field(
        True, description="managed mode: a second, ICE-lite Janus serves the viewers"
    )
    janus_nat_1_1_mapping: str | None = Field(
        None, description="managed Janus behind 1:1 NAT: the public IP it advertises in candidates"
    )
    janus_stun_server: str | None = Field(None, description="host:port for the managed Janus")
    janus_egress_nodes: int = Field(
        1, ge=1, le=64, description="managed mode: how many egress Janus processes to run "
        "(one per core or two uses a large machine; viewers spread over them)",
    )
    janus_egress_max_viewers: int = Field(
        0, ge=0, description="managed egress nodes: most viewers each; 0: no limit")
    janus_egress_max_out_bitrate: int = Field(
        0, ge=0, description="managed egress nodes: outbound bit/s budget each; 0: no limit")
    janus_rtp_port_range: str = Field("20000-40000", pattern=r"^\d+-\d+$")
    janus_debug_level: int = Field(4, ge=0, le=7)
    janus_event_loops: int = Field(
        2, ge=0, le=64, description="managed Janus: shared event loops (0: a thread per handle)"
    )
    janus_request_timeout: float = Field(4.0, gt=0, le=30)
    janus_transport: Literal["http", "websocket"] = Field(
        "websocket", description="how requests and events reach Janus: websocket (one socket "
        "per node, events pushed; the managed Janus serves it, a configured node needs ws_url, "
        "else http) or http (a POST per request, a long poll per session). Replicas "
        "(redis_url) stay on http",
    )

    region: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="this gateway's region: viewers of unknown region count as its own",
    )
    region_networks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="region -> client CIDRs: a viewer's address says its region (a "
        "'region' query parameter on the WHEP POST wins over it)",
    )
    region_gateways: dict[str, str] = Field(
        default_factory=dict,
        description="region -> base URL of that region's gateway: its viewers get 307 there",
    )
    stream_bitrate_default: int = Field(
        2_000_000, ge=1, description="bit/s a viewer counts for while Janus has not yet "
        "reported its stream's bitrate (or a node has no admin API)",
    )

    stream_keys: dict[str, str] = Field(
        default_factory=dict,
        description='Stream name -> publish key; "*" applies to every stream. Empty: open publishing',
    )
    viewer_keys: dict[str, str] = Field(
        default_factory=dict,
        description='Stream name -> viewer token; "*" applies to every stream. Empty: open viewing',
    )
    viewer_jwt_secret: str | None = Field(
        None, min_length=16,
        description="HS256 secret: every stream then needs a viewer token (JWT with a stream claim)",
    )
    admin_token: str | None = Field(
        None, min_length=16,
        description="Bearer token of the operator API under /api (streams, sessions, nodes, "
        "recordings); unset: those routes answer 404",
    )
    public_listing: Literal["names", "details", "off"] = Field(
        "names", description="what GET /api/streams and the / page show anyone: names (stream "
        "names and live state), details (plus codecs and viewer counts) or off (404). "
        "Session ids and node names never appear",
    )
    whep_counter_offer: bool = Field(
        False, description="answer every WHEP POST with a 406 counter-offer (draft-03)"
    )
    viewer_connect_timeout: float = Field(15.0, gt=0)
    mountpoint_grace: float = Field(
        3.0, ge=0, description="seconds a mountpoint outlives its last viewer once the "
        "publisher is gone (while it is live, mountpoints stay)"
    )
    mountpoint_buffer_keyframe: bool = Field(
        True, description="Janus keeps each mountpoint's last keyframe for new viewers "
        "(first frame without waiting for the publisher's next keyframe)",
    )
    mountpoint_threads: int = Field(
        2, ge=0, le=64, description="Streaming helper threads per mountpoint (large audiences)"
    )
    ice_servers: list[IceServer] = Field(default_factory=list)
    turn_secret: str | None = Field(
        None, min_length=16, description="TURN REST shared secret (coturn static-auth-secret): "
        "every POST gets fresh time-limited credentials for turn_urls in its Link headers",
    )
    turn_ttl: int = Field(86400, ge=60, le=7 * 86400,
                          description="seconds a TURN REST credential stays valid")
    turn_urls: list[str] = Field(
        default_factory=list, description="turn:/turns: URLs the TURN REST credentials are for, "
        "e.g. turn:turn.example.com:3478?transport=udp and ...?transport=tcp",
    )
    janus_ice_tcp: bool = Field(
        False, description="managed ICE-lite egress Janus also takes ICE over TCP (viewers "
        "whose firewall drops UDP); same port range as UDP",
    )
    webhooks: list[WebhookSettings] = Field(
        default_factory=list, description="receivers of event webhooks: {url, secret, events}")
    webhook_timeout: float = Field(5.0, gt=0, le=60, description="seconds per delivery attempt")
    webhook_retries: int = Field(5, ge=0, le=20, description="attempts after a failed first one")
    webhook_backoff: float = Field(0.5, gt=0, le=60,
                                   description="seconds before the first retry; doubles each time")
    webhook_queue_size: int = Field(1000, ge=1, le=1_000_000,
                                    description="events waiting per receiver; more are dropped")
    webhook_viewers_interval: float = Field(
        1.0, gt=0, description="viewers.changed: at most one event per stream per interval")
    auth_webhook_url: str | None = Field(
        None, description="asked before each publish and view; 2xx allows, 401/403 refuse, "
        "unreachable or anything else: 503",
    )
    auth_webhook_secret: str | None = Field(
        None, description="whsec_ secret: the auth webhook's requests are signed like events")
    auth_webhook_timeout: float = Field(2.0, gt=0, le=30)
    auth_webhook_cache_ttl: float = Field(
        5.0, ge=0, description="seconds an answer of the auth webhook is reused")
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    video_codecs: str = "h264,vp8,vp9,av1,h265"
    audio_codecs: str = "opus"
    max_bitrate: int = Field(0, ge=0, description="bit/s per publisher; 0: no limit")
    ingest_pool_size: int = Field(
        2, ge=0, le=64, description="VideoRoom rooms and handles each ingest node keeps ready "
        "for the next publishers (a WHIP POST then makes one Janus round trip, not three); "
        "0: none",
    )
    publisher_connect_timeout: float = Field(
        10.0, gt=0, description="seconds a new publisher has to start sending media"
    )
    publisher_media_timeout: float = Field(
        5.0, gt=0, description="seconds without media before a publisher is dropped"
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024,
                                description="larger request bodies get 413")
    body_timeout: float = Field(10.0, gt=0, description="seconds to receive a request body (408)")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="addresses or CIDRs of reverse proxies whose forwarding header names the "
        "client (comma-separated in the environment); nobody else's is believed",
    )
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = Field(
        "x-forwarded-for", description="the header the trusted proxies write: X-Forwarded-For "
        "(with X-Forwarded-Host/-Proto) or Forwarded (RFC 7239)",
    )
    # Rates are "N/second|minute|hour"; empty or null turns a budget off.  The
    # sizing is explained in README.md, "Rate limits".
    rate_limit_storage: str = Field(
        "memory://", description="where budgets are counted: memory:// (per process) or "
        "redis://host:port/db (shared by the replicas)",
    )
    rate_limit_per_client: str | None = Field(
        "20000/minute", description="POST/PATCH/DELETE under /whip and /whep per client address"
    )
    rate_limit_view_per_client: str | None = Field(
        "3000/minute", description="new WHEP sessions (viewers) per client address"
    )
    rate_limit_publish_per_client: str | None = Field(
        "120/minute", description="new WHIP sessions (publishers) per client address"
    )
    rate_limit_per_stream: str | None = Field(
        "6000/minute", description="new sessions per stream, from all clients"
    )
    rate_limit_per_session: str | None = Field(
        "120/minute", description="PATCH/DELETE/extension requests per session"
    )
    rate_limit_auth_failures_per_client: str | None = Field(
        "30/minute", description="401/403 answers per client address; past it, its requests "
        "with a token get 429",
    )
    record: list[str] = Field(
        default_factory=list, description='streams whose publish sessions are recorded ("*": '
        "every stream); each session ends as one MP4 or WebM under recordings_dir",
    )
    recordings_dir: Path = Field(
        Path("recordings"), description="where recordings and their index.json live; the "
        "ingest Janus writes its .mjr files here, so it must be on the same filesystem",
    )
    recordings_min_free_mb: int = Field(
        1024, ge=0, description="free-space floor in MB: below it, new recordings are not "
        "started (publishing goes on)",
    )
    recordings_retention_days: float = Field(
        0, ge=0, description="recordings older than this many days are deleted; 0: kept forever",
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain): serve HTTPS; browsers need it for "
        "/publish/<stream> from another machine (camera access needs a secure context)",
    )
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert")
    log_level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    redis_url: str | None = Field(
        None, description="redis://host:port/db: run as one of several gateway replicas that "
        "share their sessions there (any replica answers for any session, and takes over a dead "
        "one's). Unset: one process, state in memory",
    )
    replica_url: str | None = Field(
        None, description="with redis_url: the URL the other replicas reach this one at "
        "(default http://host:port; set it when host is 0.0.0.0)",
    )
    replica_lease: float = Field(
        6.0, ge=1.0, le=30.0, description="with redis_url: seconds a replica's lease lasts; it "
        "renews it every third of that, and another replica takes its sessions over once it "
        "lapses (well within Janus's session_timeout)",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text lines, or JSON lines (one object per line) for log shippers; "
        "both carry the request id",
    )
    instance_name: str = Field(
        "whip-gateway", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="tag on everything this gateway makes in Janus; at start it frees what "
        "carries its tag. Gateways sharing a Janus need different names",
    )

    @field_validator("public_url", "replica_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value!r} is not an http(s) URL")
            return value.rstrip("/")
        return value

    @field_validator("region_networks")
    @classmethod
    def _region_networks(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for region, networks in value.items():
            try:
                for network in networks:
                    ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"region {region!r}: {exc}") from None
        return value

    @field_validator("region_gateways")
    @classmethod
    def _region_gateways(cls, value: dict[str, str]) -> dict[str, str]:
        for region, url in value.items():
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"region {region!r}: {url!r} is not an http(s) URL")
        return {region: url.rstrip("/") for region, url in value.items()}

    @field_validator("turn_urls")
    @classmethod
    def _turn_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if url.split(":", 1)[0] not in ("turn", "turns"):
                raise ValueError(f"{url!r} is not a turn: or turns: URL")
        return value

    @field_validator("auth_webhook_url")
    @classmethod
    def _auth_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("janus_nat_1_1_mapping")
    @classmethod
    def _nat_ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @field_validator("janus_rtp_port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        low, high = (int(p) for p in value.split("-"))
        if not 1024 <= low < high <= 65535:
            raise ValueError(f"{value!r}: want MIN-MAX with 1024 <= MIN < MAX <= 65535")
        return value

    @model_validator(mode="after")
    def _replicas_share_janus(self) -> "Settings":
        if self.redis_url and not self.janus:
            raise ValueError("redis_url (replicas) needs Janus nodes that every replica "
                             "reaches (janus = [...]): a replica's managed Janus dies with it")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> "Settings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{str(path)!r} is not a readable file")
        return self

    @field_validator("record")
    @classmethod
    def _recorded(cls, value: list[str]) -> list[str]:
        import re

        bad = [n for n in value if n != "*" and not re.match(STREAM_NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"{bad} are not stream names (or *)")
        return value

    @field_validator("stream_keys", "viewer_keys")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for stream, key in value.items():
            if not key:
                raise ValueError(f"the key for stream {stream!r} is empty")
        return value

    @field_validator("rate_limit_per_client", "rate_limit_view_per_client",
                     "rate_limit_publish_per_client", "rate_limit_per_stream",
                     "rate_limit_per_session", "rate_limit_auth_failures_per_client")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value:
            from limits import parse

            try:
                parse(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a rate like 60/minute") from None
        return value or None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):  # the environment: "10.0.0.0/8, 127.0.0.1" (or JSON)
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [v for v in (p.strip() for p in text.split(",")) if v]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        from gateway.http.forwarded import parse_networks

        return [str(n) for n in parse_networks(value)]

    @field_validator("rate_limit_storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        schemes = ("memory://", "redis://", "rediss://", "redis+unix://")
        if not value.startswith(schemes):
            raise ValueError(f"{value!r}: use one of {', '.join(schemes)}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value:
            schemes = ("redis://", "rediss://", "redis+unix://", "unix://")
            if not value.startswith(schemes):
                raise ValueError(f"{value!r}: use one of {', '.join(schemes)}")
        return value or None

    @field_validator("video_codecs", "audio_codecs")
    @classmethod
    def _codecs(cls, value: str) -> str:
        known = {"opus", "pcmu", "pcma", "g722", "isac16", "isac32", "multiopus",
                 "h264", "vp8", "vp9", "av1", "h265"}
        names = [v.strip().lower() for v in value.split(",") if v.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ValueError(f"unknown codec(s) {unknown} (known: {sorted(known)})")
        return ",".join(names)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) beat env, env beats the config file.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @property
    def managed_janus(self) -> bool:
        return not self.janus


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from file, env and explicit overrides (flags)."""
    cls: type[Settings] = Settings
    if config_file is not None:
        path = Path(config_file)
        try:
            tomllib.loads(path.read_text())
        except OSError as exc:
            raise SettingsError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

        cls = FileSettings
    flags = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = cls(**flags)
        legacy = _legacy_forwarded_allow_ips(settings)
        return cls(**flags, trusted_proxies=legacy) if legacy else settings
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SettingsError(f"bad setting {where}: {first['msg']}{more}") from None


def _legacy_forwarded_allow_ips(settings: Settings) -> list[str] | None:
    """uvicorn's ``FORWARDED_ALLOW_IPS``, once how proxies were trusted: mapped, with a warning.

    The gateway now reads the forwarding headers itself (``trusted_proxies``);
    a deployment that set the uvicorn variable keeps its meaning.  ``*``
    (trust everyone) becomes every IPv4 and IPv6 address.
    """
    value = os.environ.get("FORWARDED_ALLOW_IPS", "").strip()
    if not value or settings.trusted_proxies:
        return None
    proxies = [p.strip() for p in value.split(",") if p.strip()]
    proxies = [n for p in proxies for n in (("0.0.0.0/0", "::/0") if p == "*" else (p,))]
    logging.getLogger("gateway").warning(
        "FORWARDED_ALLOW_IPS is uvicorn's and no longer read by uvicorn here; it is taken as "
        "trusted_proxies=%s: set WHIP_GATEWAY_TRUSTED_PROXIES instead", ",".join(proxies))
    return proxies
