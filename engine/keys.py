"""Every Redis key name the project uses, in one place.

All keys start with the deployment's prefix (``PM_KEY_PREFIX``, default ``pm``)
so several deployments or test runs can share one Redis. Market keys carry the
hash tag ``{m:<id>}`` so a later move to Redis Cluster keeps a market's keys in
one slot.

Money and shares are integers of micro-units; times are Unix milliseconds
(``*_ms``); ``last_event`` is the id of the stream entry of the latest change.

==============================  =============================================
key                             contents
==============================  =============================================
``<p>:u:<user>``                hash: username, available, locked, key_hash ('' for
                                none), created_ms, last_event; loaded_ms once put back
                                from PostgreSQL (the hot set)
``<p>:u:<user>:pos``            hash: ``<market>:<label>`` -> micro-shares
``<p>:u:<user>:cost``           hash: ``<market>:<label>`` -> net cost (signed micro-units: buys
                                minus sells) of each position the user traded, zero-share ones
                                too; mirrors the market's ``:cost`` hash (lua/trade.lua writes
                                both). Dropped with the user on eviction; a load puts back the
                                rows of markets not SETTLED (record/loader.py)
``<p>:usernames``               hash: username -> user id, every user ever (never evicted:
                                uniqueness without PostgreSQL). In a sharded deployment
                                (engine/sharded.py) the deployment's own directory holds
                                ``<user id>|<claimed ms>`` (lua/claim_username.lua)
``<p>:user_ids``                set: every user id ever (never evicted: uniqueness and
                                existence of an evicted user without PostgreSQL)
``<p>:apikeys``                 hash: sha256(api key) -> user id, every live key of every
                                user (never evicted: an unknown or revoked key is 401 without
                                PostgreSQL; the authenticator reads it on every request)
``<p>:apikeys:used``            hash: key id -> last use (ms) of every live key used so far,
                                flushed by each API replica every few seconds (never evicted)
``<p>:apikeys:unsaved``         hash: key id -> last use (ms) not yet in PostgreSQL (the
                                persister copies and removes them every few seconds)
``<p>:ukeys:<user>``            hash: key id -> ``<sha256>|<created_ms>|<last4>`` of each live
                                key of the user (engine/api_keys.py); evicted and reloaded
                                with the user. Not under ``u:``: scans of ``<p>:u:*`` find users
``<p>:{m:<market>}``            hash: name, status, outcome ('' until resolved), b
                                (liquidity), q_yes, q_no, pool, version (bumped by
                                every change), created_ms, updated_ms, last_event,
                                last_trade_id (once traded), settled_yes, settled_no,
                                payouts_total, holders_paid, close_ms (a close time, if any),
                                closed_ms (once CLOSED). A market of other labels than
                                YES/NO also has outcomes (its labels, comma-joined) and
                                keeps label L's totals in q:L and settled:L instead of
                                q_yes ... settled_no (engine/labels.py)
``<p>:{m:<market>}:pos``        hash: ``<user>:<label>`` -> micro-shares
``<p>:{m:<market>}:cost``       hash: ``<user>:<label>`` -> net cost (signed micro-units) of every
                                position ever traded in the market, kept when its shares are
                                sold or settled to zero (CANCEL refunds and P&L need it); dropped
                                when the market is archived (PostgreSQL's position_state keeps it)
``<p>:{m:<market>}:refunded``   set: users a CANCEL settlement has refunded so far (so a resumed
                                settlement refunds nobody twice); deleted once SETTLED
``<p>:markets``                 sorted set: ids of the markets resident in Redis, scored by
                                created_ms
``<p>:archived``                hash: market id -> JSON of its final (SETTLED) market hash, for
                                every market the janitor archived (never evicted: a market is
                                resident or archived, so Redis alone lists and finds them all)
``<p>:evicted``                 hash: user id -> ``<last_event>|<eviction ms>`` when the janitor
                                evicted it (a load installs a PostgreSQL row only if it includes
                                that event); dropped when the user comes back, and with one shard
                                forgotten by the janitor EVICTED_MARK_KEEP_MS later (engine/hotset.py)
``<p>:events``                  stream: every state change (the EventBus); each entry has
                                type, ts and its type's fields (docs/API.md, "Event stream")
``<p>:trade_seq``               counter: last trade id
``<p>:idem:<user>:<key>``       string with TTL (PM_IDEMPOTENCY_TTL_S): the first response to
                                an Idempotency-Key, ``|``-separated (lua/trade.lua)
``<p>:idemclaim:<user>:<key>``  string with TTL (PM_IDEMPOTENCY_TTL_S), in the user's home shard of a
                                sharded deployment: ``<request hash>|<shard>``, the request and the
                                market's shard an Idempotency-Key was first used for (engine/sharded.py)
``<p>:dirty``                   sorted set: market ids scored by their last change (idle flush)
``<p>:closing``                 sorted set: ids of OPEN or CREATED markets with a close time, scored
                                by it (ms); the janitor closes those due (lua/close_market.lua)
``<p>:totals``                  hash: deposits, withdrawals (conservation)
``<p>:rl:<user>``               hash: the user's rate-limit token bucket: tokens, ts_ms
                                (expires once full again)
``<p>:events:dead``             stream: entries the persister could not read: original_id,
                                reason, entry (JSON of the original fields)
``<p>:persister:committed``     string: stream id up to which every entry is
                                committed to PostgreSQL (also PUBLISHed on
                                the channel of the same name)
``<p>:persister:stats``         hash: the persister group's lag: lag_entries,
                                oldest_age_ms, committed, updated_ms
``<p>:persister:fence``         counter: INCRed before a WAIT for replicas (PM_REPLICA_ACKS),
                                so the WAIT covers every write read before it
``<p>:xfer:<id>``               string: a transfer between a user's sub-wallets (engine/transfers.py),
                                in the prefix of a shard (engine/shards.py): on the source
                                ``out|<user>|<from>|<to>|<amount>|<ms>`` while pending, then ``done|...``
                                (expiring); on the destination ``in|...`` once credited
``<p>:outbox``                  sorted set: the shard's pending transfers out, scored by when (ms):
                                what the sweeper finishes
==============================  =============================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "pm"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}:u:{user_id}"

    def user_positions(self, user_id: str) -> str:
        return f"{self.prefix}:u:{user_id}:pos"

    def market(self, market_id: str) -> str:
        return f"{self.prefix}:{{m:{market_id}}}"

    def market_positions(self, market_id: str) -> str:
        return f"{self.prefix}:{{m:{market_id}}}:pos"

    def user_costs(self, user_id: str) -> str:
        """Net cost per position, user side: beside ``user_positions`` (same tag once users get one)."""
        return f"{self.prefix}:u:{user_id}:cost"

    def market_costs(self, market_id: str) -> str:
        """Net cost per position, market side: in the market's slot, beside its positions."""
        return f"{self.prefix}:{{m:{market_id}}}:cost"

    def market_refunded(self, market_id: str) -> str:
        """Users a CANCEL settlement refunded so far: in the market's slot, beside its net costs."""
        return f"{self.prefix}:{{m:{market_id}}}:refunded"

    def is_user_key(self, key: str) -> bool:
        """A user's hash ``<p>:u:<id>`` rather than one of its side hashes (``:pos``, ``:cost``): ids hold no colon."""
        return key.startswith(self.user("")) and ":" not in key[len(self.user("")):]

    def idempotency(self, user_id: str, key: str) -> str:
        return f"{self.prefix}:idem:{user_id}:{key}"

    def idempotency_claim(self, user_id: str, key: str) -> str:
        """A sharded deployment's claim of an Idempotency-Key in the user's home shard (engine/sharded.py)."""
        return f"{self.prefix}:idemclaim:{user_id}:{key}"

    def rate_bucket(self, user_id: str) -> str:
        return f"{self.prefix}:rl:{user_id}"

    @property
    def usernames(self) -> str:
        return f"{self.prefix}:usernames"

    def user_api_keys(self, user_id: str) -> str:
        return f"{self.prefix}:ukeys:{user_id}"

    @property
    def apikeys(self) -> str:
        return f"{self.prefix}:apikeys"

    @property
    def apikeys_used(self) -> str:
        return f"{self.prefix}:apikeys:used"

    @property
    def apikeys_unsaved(self) -> str:
        return f"{self.prefix}:apikeys:unsaved"

    @property
    def user_ids(self) -> str:
        return f"{self.prefix}:user_ids"

    @property
    def archived(self) -> str:
        return f"{self.prefix}:archived"

    @property
    def evicted(self) -> str:
        return f"{self.prefix}:evicted"

    @property
    def markets(self) -> str:
        return f"{self.prefix}:markets"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def trade_seq(self) -> str:
        return f"{self.prefix}:trade_seq"

    @property
    def trade_seq_base(self) -> str:
        """The trade counter as a cutover set it (``recover --reshard``, persister/recover.py: it starts
        every counter above the highest recorded id, on an id no trade has): ``audit`` requires the
        record to hold the counter's last trade only once trades were made after it."""
        return f"{self.prefix}:trade_seq:base"

    @property
    def dirty(self) -> str:
        return f"{self.prefix}:dirty"

    @property
    def closing(self) -> str:
        return f"{self.prefix}:closing"

    @property
    def totals(self) -> str:
        return f"{self.prefix}:totals"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:events:dead"

    @property
    def committed(self) -> str:
        return f"{self.prefix}:persister:committed"

    @property
    def persister_lease(self) -> str:
        """Which persister works this shard's stream now (persister/leases.py; a consumer name, expiring)."""
        return f"{self.prefix}:persister:lease"

    @property
    def persisters(self) -> str:
        """The deployment's live persisters: consumer name -> last heartbeat, ms (persister/leases.py)."""
        return f"{self.prefix}:persister:live"

    @property
    def persister_stats(self) -> str:
        return f"{self.prefix}:persister:stats"

    @property
    def replication_fence(self) -> str:
        return f"{self.prefix}:persister:fence"

    def transfer(self, transfer_id: str) -> str:
        return f"{self.prefix}:xfer:{transfer_id}"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}:outbox"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of this prefix."""
        return f"{self.prefix}:*"
