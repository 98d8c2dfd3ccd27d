"""/metrics without Janus: route-template labels, one registry per app, and the
Grafana dashboard querying only metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import load_settings
from gateway.metrics import janus_verb

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "whip-gateway.json"
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created")}


def exported_names() -> set[str]:
    """Every sample name the app's registry can export (histogram series too)."""
    app = create_app(load_settings())
    names = set()
    for family in app.state.metrics.registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["definition"])
    queried = {m for e in exprs for m in re.findall(r"\bwhip_gateway_[a-z_]+", e)}
    assert queried, "the dashboard queries nothing"
    assert queried - exported_names() == set()
    # ...and every exported metric has a panel.
    families = {n.removesuffix(s) for n in queried for s in ("_bucket", "_count", "_total")
                if n.endswith(s)} | queried
    missing = {n for n in exported_names() if not n.endswith(("_created", "_sum", "_count"))
               and n.removesuffix("_bucket").removesuffix("_total") not in families}
    assert missing == set()


async def test_responses_are_labelled_by_route_template() -> None:
    app = create_app(load_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        assert (await c.get("/api/streams")).status_code == 200
        assert (await c.delete("/whip/a/b")).status_code == 404
        assert (await c.delete("/whip/c/d")).status_code == 404
        assert (await c.get("/no/such/path")).status_code == 404
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(r.text) for s in f.samples}

    def responses(route: str, method: str, status: str) -> float:
        key = (("method", method), ("route", route), ("status", status))
        return samples.get(("whip_gateway_http_responses_total", key), 0)

    assert responses("/api/streams", "GET", "200") == 1
    assert responses("/whip/{stream}/{session}", "DELETE", "404") == 2, "one series for every session"
    assert responses("unmatched", "GET", "404") == 1
    assert samples[("whip_gateway_streams_live", ())] == 0
    assert samples[("whip_gateway_event_stream_subscribers", ())] == 0


def test_apps_have_their_own_registries() -> None:
    first, second = create_app(load_settings()), create_app(load_settings())
    assert first.state.metrics.registry is not second.state.metrics.registry


def test_janus_verbs_stay_bounded() -> None:
    assert janus_verb({"janus": "attach"}) == "attach"
    assert janus_verb({"janus": "message", "body": {"request": "watch"}}) == "message.watch"
    assert janus_verb({"janus": "message", "body": {"request": {"x": 1}}}) == "message"
    assert janus_verb(None) == "other"
