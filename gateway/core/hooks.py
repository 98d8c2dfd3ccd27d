"""The webhooks a gateway runs, built from settings: event webhooks
(``webhooks.py`` + ``hook_events.py``) and the auth webhook
(``auth_webhook.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.core.auth_webhook import AuthPolicy, AuthWebhook
from gateway.core.hook_events import HookEvents
from gateway.core.streams import StreamRegistry
from gateway.core.webhooks import HookPolicy, Webhooks

if TYPE_CHECKING:
    from gateway.core.placement import NodePool


class Hooks:
    """The webhooks a gateway runs, built from settings: what ``create_app`` holds."""

    def __init__(self, webhooks: Webhooks | None, events: HookEvents | None,
                 auth: AuthWebhook | None) -> None:
        self.webhooks, self.events, self.auth = webhooks, events, auth

    def recording_ready(self, record: dict[str, Any]) -> None:
        if self.webhooks is not None:
            self.webhooks.emit("recording.ready", record)

    def recording_failed(self, record: dict[str, Any]) -> None:
        if self.webhooks is not None:
            self.webhooks.emit("recording.failed", record)

    @classmethod
    def from_settings(cls, settings: Any, registry: StreamRegistry, viewers: Any,
                      pool: NodePool) -> Hooks:
        """``viewers`` is the egress ``ViewerBook``; the pool's nodes, now and
        added at run time, are observed for up/down."""
        webhooks = events = None
        if settings.webhooks:
            policy = HookPolicy(timeout=settings.webhook_timeout, retries=settings.webhook_retries,
                                backoff=settings.webhook_backoff,
                                queue_size=settings.webhook_queue_size,
                                viewers_interval=settings.webhook_viewers_interval)
            webhooks = Webhooks([(w.url, w.secret, w.events) for w in settings.webhooks], policy)
            events = HookEvents(webhooks, registry, viewers.count, policy)
            viewers.subscribe(events)
            pool.observe(events)
        auth = None
        if settings.auth_webhook_url:
            auth = AuthWebhook(AuthPolicy(url=settings.auth_webhook_url,
                                          secret=settings.auth_webhook_secret,
                                          timeout=settings.auth_webhook_timeout,
                                          cache_ttl=settings.auth_webhook_cache_ttl))
        return cls(webhooks, events, auth)

    def start(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()

    async def close(self) -> None:
        if self.events is not None:
            self.events.flush_all()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.auth is not None:
            await self.auth.close()
