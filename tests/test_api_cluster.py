"""The API over HTTP on a Redis Cluster (``PM_REDIS_URL=redis+cluster://...``).

One ``predmarket serve`` and a persister on the session's 3-master cluster, under a
prefix with a hash tag (every key of the deployment in one slot). What talks to one
node directly rather than through the cluster client is exercised here: the live-stream
reader's undecoded XREAD (an SSE client sees the trade) and the committed-mark listener
(a ``durable=postgres`` answer); and neither logs a failure meanwhile. Then the operator's tools on a
cluster: ``audit``, and ``recover`` rebuilding a deployment's lost keys from PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.api import Api, Stack, StackFactory, assert_trade, dec
from tests.support.cluster import PrivateCluster
from tests.support.event_streams import atrade, check_message, sse
from tests.support.faults import Load, assert_audit_passes, cli, diff, full_snapshot, without_last_uses
from tests.support.redis_data import delete_prefix
from tests.support.services import sync_client
from tests.support.waiting import wait_until

#: What the stream reader and the committed-mark listener log when they cannot read (see api/).
FAILURES = ("event stream reader", "committed-mark listener", "Traceback")


@pytest.fixture
def cluster_stack(stacks: StackFactory, redis_cluster: PrivateCluster) -> Iterator[Stack]:
    prefix = f"{{pmtest-cluster-{uuid.uuid4().hex[:8]}}}"
    stack = stacks.start("cluster", replicas=1, redis_url=redis_cluster.url, prefix=prefix)
    try:
        yield stack
    finally:
        stack.stop()
        delete_prefix(prefix, redis_cluster.url)
        client = sync_client(redis_cluster.url)
        try:
            assert list(client.scan_iter(match=f"{prefix}*")) == []
        finally:
            client.close()


async def test_trading_live_events_and_durable_answers_on_a_cluster(cluster_stack: Stack,
                                                                    redis_cluster: PrivateCluster) -> None:
    api = Api(cluster_stack)
    try:
        r = api.request("GET", "/readyz")
        assert r.status_code == 200, r.text
        user = api.create_user("100")
        assert dec(api.account(user.user_id)["available"]) == dec("100.000000")
        market_id = api.create_market()

        async with sse(cluster_stack.url, (market_id,)) as stream:
            trade = await atrade(cluster_stack, user, market_id, "BUY", "YES", "2")
            executed = await stream.next()
        check_message(executed)
        assert executed.event == "TradeExecuted", executed
        assert (executed.data["market_id"], executed.data["shares"]) == (market_id, trade["shares"])

        r = api.trade(user, market_id, "BUY", "NO", shares="1", headers={"Prefer": "durable=postgres"})
        assert r.status_code == 201, r.text
        assert r.headers.get("Preference-Applied") == "durable=postgres"
        assert_trade(r.json())
        assert api.history(market_id)[0] == r.json()  # in PostgreSQL already

        # Every key of the deployment is on the one master owning the tag's slot.
        owner = redis_cluster.master_for_key(cluster_stack.events_key)
        with owner.client(decode_responses=True) as client:
            assert client.exists(cluster_stack.events_key) == 1
    finally:
        api.close()
    for process in (*cluster_stack.servers, *cluster_stack.persisters):
        log = process.log_path.read_text(errors="replace")
        assert not any(failure in log for failure in FAILURES), log


def test_audit_and_recover_on_a_cluster_rebuild_the_same_state(cluster_stack: Stack) -> None:
    """``predmarket audit`` and ``recover`` on a cluster (SCAN per master, one-slot scripts): the state lost
    from the cluster is rebuilt from PostgreSQL key for key, and trading goes on."""
    api = Api(cluster_stack)
    try:
        live, settled = api.create_market("500"), api.create_market("500")
        load = Load(api, [live, settled], traders=4, max_trades=25).start()
        load.complete()
        api.resolve(settled, "YES")
        r = api.admin("POST", f"/v1/markets/{settled}/settle")
        assert r.status_code == 200, r.text
        cluster_stack.wait_persisted()
        assert_audit_passes(cluster_stack)
        client = cluster_stack.redis()
        try:
            before = full_snapshot(client, cluster_stack.prefix)
            assert delete_prefix(cluster_stack.prefix, cluster_stack.redis_url) > 0
            assert full_snapshot(client, cluster_stack.prefix) == {}
            # The running persister recreates its (empty) stream and group: bookkeeping, not state.
            wait_until(lambda: client.exists(cluster_stack.events_key) == 1, 20, "the persister to reconnect")
            done = cli(cluster_stack, "recover")
            assert done.returncode == 0, done.stdout + done.stderr
            after = without_last_uses(full_snapshot(client, cluster_stack.prefix))
            before = without_last_uses(before)
            assert after == before, diff(before, after)
        finally:
            client.close()
        more = Load(api, [live], traders=2, max_trades=10).start()
        more.complete()
        cluster_stack.wait_persisted()
        assert_audit_passes(cluster_stack)
    finally:
        api.close()

