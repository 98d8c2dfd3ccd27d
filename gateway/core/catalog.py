"""Streams an operator defined through the API, with their credentials.

Settings define stream keys and viewer tokens at start; the operator API
(``POST /api/streams``) adds streams at run time, each with its own publish
key and viewer policy.  Those live in this process's memory only: a restart
forgets them (the README says so).  A stream the API defines is checked
against its own credentials; any other stream falls back to the settings'
keys, so both keep working side by side.

The two ``*Gate`` objects stand where ``StreamKeys``/``ViewerTokens`` stood
for ``Ingest`` and ``Egress``: the domain keeps calling ``check``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum

from gateway.config import STREAM_NAME_PATTERN
from gateway.core.auth import StreamKeys, ViewerTokens
from gateway.errors import MalformedBody, StreamExists, StreamNotDefined

_NAME = re.compile(STREAM_NAME_PATTERN)


class ViewerPolicy(Enum):
    OPEN = "open"  # anyone may watch
    TOKEN = "token"  # one static viewer token
    JWT = "jwt"  # an HS256 JWT whose ``stream`` claim names the stream


def new_secret() -> str:
    """A credential the operator did not choose: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


@dataclass
class StreamDefinition:
    name: str
    publish_key: str
    viewer_policy: ViewerPolicy = ViewerPolicy.OPEN
    viewer_token: str | None = None  # policy TOKEN
    jwt_secret: str | None = None  # policy JWT

    def publish_keys(self) -> StreamKeys:
        return StreamKeys({self.name: self.publish_key})

    def viewer_tokens(self) -> ViewerTokens:
        if self.viewer_policy is ViewerPolicy.TOKEN:
            assert self.viewer_token
            return ViewerTokens({self.name: self.viewer_token})
        if self.viewer_policy is ViewerPolicy.JWT:
            return ViewerTokens({}, self.jwt_secret)
        return ViewerTokens({})

    def describe(self, *, secrets_too: bool = False) -> dict[str, object]:
        """What the API shows; the credentials only when they were just made."""
        out: dict[str, object] = {"name": self.name, "viewer_policy": self.viewer_policy.value}
        if secrets_too:
            out["publish_key"] = self.publish_key
            if self.viewer_token:
                out["viewer_token"] = self.viewer_token
            if self.jwt_secret:
                out["jwt_secret"] = self.jwt_secret
        return out


def check_stream_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise MalformedBody(f"stream names match {STREAM_NAME_PATTERN}")
    return name


class StreamCatalog:
    """The API's stream definitions (in memory), and the gates that read them."""

    def __init__(self, publish_keys: StreamKeys, viewer_tokens: ViewerTokens) -> None:
        self._defined: dict[str, StreamDefinition] = {}
        self.publish_gate = PublishGate(self, publish_keys)
        self.viewer_gate = ViewerGate(self, viewer_tokens)
        self.settings_keys = publish_keys

    def get(self, name: str) -> StreamDefinition | None:
        return self._defined.get(name)

    def names(self) -> list[str]:
        return list(self._defined)

    def create(self, name: str, *, publish_key: str | None = None,
               viewer_policy: str = "open", viewer_token: str | None = None,
               jwt_secret: str | None = None) -> StreamDefinition:
        check_stream_name(name)
        if name in self._defined:
            raise StreamExists(f"stream {name!r} is already defined")
        try:
            policy = ViewerPolicy(viewer_policy)
        except ValueError:
            raise MalformedBody(f"viewer_policy is one of {[p.value for p in ViewerPolicy]}") from None
        for field, value in (("publish_key", publish_key), ("viewer_token", viewer_token),
                             ("jwt_secret", jwt_secret)):
            if value is not None and (not isinstance(value, str) or len(value) < 16):
                raise MalformedBody(f"{field} must be a string of at least 16 characters")
        definition = StreamDefinition(
            name, publish_key or new_secret(), policy,
            viewer_token=(viewer_token or new_secret()) if policy is ViewerPolicy.TOKEN else None,
            jwt_secret=(jwt_secret or new_secret()) if policy is ViewerPolicy.JWT else None,
        )
        self._defined[name] = definition
        return definition

    def rotate(self, name: str, publish_key: str | None = None) -> StreamDefinition:
        """A new publish key; the live publisher keeps going (keys are checked on POST)."""
        definition = self._defined.get(name)
        if definition is None:
            raise StreamNotDefined(f"stream {name!r} was not created through the API")
        if publish_key is not None and (not isinstance(publish_key, str) or len(publish_key) < 16):
            raise MalformedBody("publish_key must be a string of at least 16 characters")
        definition.publish_key = publish_key or new_secret()
        return definition

    def remove(self, name: str) -> StreamDefinition | None:
        return self._defined.pop(name, None)


class PublishGate(StreamKeys):
    """Publish keys: the API's definition of a stream, else the settings'."""

    def __init__(self, catalog: StreamCatalog, fallback: StreamKeys) -> None:
        self.catalog, self.fallback = catalog, fallback

    def required_for(self, stream: str) -> bool:
        return stream in self.catalog.names() or self.fallback.required_for(stream)

    def check(self, stream: str, presented: str | None) -> None:
        definition = self.catalog.get(stream)
        if definition is None:
            self.fallback.check(stream, presented)
        else:
            definition.publish_keys().check(stream, presented)


class ViewerGate(ViewerTokens):
    """Viewer policy: the API's definition of a stream, else the settings'."""

    def __init__(self, catalog: StreamCatalog, fallback: ViewerTokens) -> None:
        self.catalog, self.fallback = catalog, fallback

    def required_for(self, stream: str) -> bool:
        definition = self.catalog.get(stream)
        if definition is None:
            return self.fallback.required_for(stream)
        return definition.viewer_policy is not ViewerPolicy.OPEN

    def check(self, stream: str, presented: str | None) -> None:
        definition = self.catalog.get(stream)
        if definition is None:
            self.fallback.check(stream, presented)
        else:
            definition.viewer_tokens().check(stream, presented)
