"""/metrics on a gateway with a real Janus 1.1.2: after one aiortc publisher and
one aiortc viewer, read with prometheus_client's own text parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.clients.whip import WhipSession
from tests.conftest import GatewayFactory
from tests.integration.test_whep import watch
from tests.integration.test_whip import assert_problem, wait_stream
from tests.publishers import aiortc_publisher, answer
from tests.viewers import aiortc_viewer

SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    r = await http.get(f"{url}/metrics")
    assert r.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_after_a_publish_and_a_view(start_gateway: GatewayFactory,
                                                  http: httpx.AsyncClient) -> None:
    gw = await start_gateway(rate_limit_publish_per_client="1/minute")
    pc = await aiortc_publisher()
    viewer_pc, frames = await aiortc_viewer()
    try:
        whip = WhipSession(gw.whip("m"), http=http)
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_stream(http, gw, "m", live=True)
        r = await watch(http, gw.whep("m"), viewer_pc)
        assert r.status_code == 201, r.text
        await frames.wait(3)
        sse = {link["rel"]: link["url"] for link in r.links.values()}[SSE_REL]
        assert (await http.post(sse, json=["viewercount"])).status_code == 201
        # A second publisher from this address is over its budget: 429.
        assert_problem(await WhipSession(gw.whip("m2"), http=http)
                       .post_offer(pc.localDescription.sdp), 429)

        s = await scrape(http, gw.url)
        assert value(s, "whip_gateway_whip_setup_seconds_count") == 1
        assert value(s, "whip_gateway_whep_setup_seconds_count") == 1
        assert value(s, "whip_gateway_viewers", stream="m") == 1
        assert value(s, "whip_gateway_node_viewers", node="janus0") == 1
        assert value(s, "whip_gateway_streams_live") == 1
        assert value(s, "whip_gateway_event_stream_subscribers") == 1
        assert value(s, "whip_gateway_publishers", state="live") == 1
        assert value(s, "whip_gateway_janus_node_up", node="janus0", role="both") == 1
        assert value(s, "whip_gateway_http_responses_total",
                     route="/whip/{stream}", method="POST", status="201") == 1
        assert value(s, "whip_gateway_http_responses_total",
                     route="/whip/{stream}", method="POST", status="429") == 1
        assert value(s, "whip_gateway_rate_limited_total", route="/whip/{stream}") == 1
        assert value(s, "whip_gateway_janus_request_seconds_count",
                     node="janus0", verb="message.joinandconfigure") == 1
        assert value(s, "whip_gateway_janus_request_seconds_count", node="janus0", verb="attach") >= 2

        assert (await http.delete(r.headers["location"])).status_code == 200
        assert (await whip.delete()).status_code == 200
        await gw.app.state.egress.settled()
        s = await scrape(http, gw.url)
        assert value(s, "whip_gateway_viewers", stream="m") == 0
        assert value(s, "whip_gateway_streams_live") == 0
        assert value(s, "whip_gateway_node_viewers", node="janus0") == 0
        assert value(s, "whip_gateway_event_stream_subscribers") == 0
    finally:
        await viewer_pc.close()
        await pc.close()
