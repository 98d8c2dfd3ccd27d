"""``whip-gateway config check FILE``: the effective settings, secrets masked.

Why: an operator (or a deploy pipeline) wants to know, before a restart,
whether a file is valid and what the gateway will actually run with once
the environment's ``WHIP_GATEWAY_*`` variables are applied, and to paste that
into a ticket without leaking credentials.  Masking goes by name, so a
setting added later (``turn_secret``, ``webhook_secret`` ...) is masked
without anyone remembering to list it here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gateway.config import Settings, load_settings

MASK = "***"
# Whole words of a setting's name: ``plugin_admin_key``, ``stream_keys``, ``admin_token``,
# ``credential``; not ``mountpoint_buffer_keyframe``.
_SECRET_NAME = re.compile(r"(^|_)(token|tokens|secret|secrets|key|keys|credential|"
                          r"credentials|password|passwd)(_|$)")


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.lower()))


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data, every secret replaced by ``***``."""
    return _mask(settings.model_dump(mode="python"), secret=False)


def _mask(value: Any, *, secret: bool) -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, secret=secret or secret_name(str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v, secret=secret) for v in value]
    if isinstance(value, Path):
        return str(value)  # a key *file*'s path is not the key
    if isinstance(value, str):
        return MASK if secret else _url_password(value)
    return value


def _url_password(value: str) -> str:
    """``redis://:pw@host`` -> ``redis://:***@host``."""
    if "://" not in value or "@" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def check(path: Path) -> str:
    """The masked effective settings as JSON; raises ``SettingsError`` naming a bad one."""
    if not path.is_file():
        from gateway.config import SettingsError

        raise SettingsError(f"config file {path}: no such file")
    return json.dumps(masked(load_settings(path)), indent=2)
