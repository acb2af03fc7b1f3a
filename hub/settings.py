"""Settings: one msgspec Struct, read once from `HUB_*` environment variables.

`HUB_DB__DSN=postgresql://…` sets `settings.db.dsn`: a double underscore nests. Values are
converted with `strict=False`, so `HUB_DB__POOL_MAX=20` becomes an int. A `HUB_` variable that
names no setting stops start-up with a message naming it: a typo must not become a silent default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from hub.calendar import ClockTime

PREFIX = "HUB_"
# Variables that carry the HUB_ prefix but are not server settings: the API key a client (curl,
# scripts) sends, and the test suite's own server addresses.
NOT_SETTINGS = ("HUB_API_KEY", "HUB_TEST_")


class SettingsError(Exception):
    """The environment does not describe a valid configuration."""


# An event loop a process may run on (hub.loops).
EventLoop = Literal["asyncio", "uvloop"]


class DbSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # None: `hub up` starts an embedded PostgreSQL under data_dir.
    dsn: str | None = None
    pool_min: Annotated[int, msgspec.Meta(ge=1)] = 2
    pool_max: Annotated[int, msgspec.Meta(ge=1, le=500)] = 20
    # Seconds one statement may run before PostgreSQL cancels it.
    statement_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # Seconds a new connection may take (an unreachable host answers 503 after this long).
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # "transaction": `dsn` goes through a transaction pooler (PgBouncer's pool_mode =
    # transaction), so no statement is kept prepared between transactions and only timezone is
    # sent at login; the role or database carries statement_timeout (docs/OPERATIONS.md,
    # "Behind PgBouncer"). "none": `dsn` is PostgreSQL itself.
    pooler: Literal["none", "transaction"] = "none"
    # A hot standby (PostgreSQL streaming replication) for reads that may lag a little: the
    # dashboard's pages, statements, the archive and /v1/usage (hub.reads). None: the primary.
    read_dsn: str | None = None
    # Those reads go to the primary instead while the standby is further behind than this.
    read_max_lag_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # None: `hub up` starts an embedded Valkey under data_dir.
    dsn: str | None = None


class HttpSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    # Largest body of the routes that set no limit of their own: every small JSON route
    # (tenants, keys, quota, templates…; their largest legal body is under 8 KiB). Sends, roster
    # imports and gateway callbacks set their own beside their routes. Larger answers 413.
    max_body_bytes: Annotated[int, msgspec.Meta(ge=16_384)] = 16_384
    # `hub serve` processes sharing the port (uvicorn workers): one per core is the production
    # setting (docs/OPERATIONS.md); the request limiter's fallback shares its rate among them.
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    debug: bool = False
    # Proxies whose X-Forwarded-For `hub serve` believes (uvicorn's forwarded-allow-ips:
    # comma-separated addresses or networks, e.g. "127.0.0.1,10.0.0.0/8"). Empty (default): no
    # header is believed, and a request's address (the operation log's) is the socket's peer.
    trusted_proxies: Annotated[
        str, msgspec.Meta(max_length=2000, pattern=r"^[0-9A-Fa-f.:/, ]*$")
    ] = ""
    # The dashboard's cookie is `Secure` (sent back only over HTTPS) on every answer, whatever
    # scheme the request came by: for a hub reached only through HTTPS. False: `Secure` only when
    # the request came by HTTPS as the server sees it (behind a proxy that ends TLS, only when a
    # proxy named in trusted_proxies says so with X-Forwarded-Proto; a client's own claim is
    # ignored). Production behind TLS: true.
    secure_cookies: bool = False
    # When set, /metrics answers only `Authorization: Bearer <this>` (Prometheus's
    # `authorization` setting); empty (default): open, to be reached from the private network
    # only (docs/OPERATIONS.md, Metrics and alerts). Printable ASCII: a header carries it.
    metrics_token: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[\x21-\x7e]*$")] = ""
    # Seconds each API process may keep a key it has checked (tenants.key_cache): a revocation,
    # a change of scopes or a tenant's suspension drops it at once on every process (PostgreSQL
    # NOTIFY); this bounds a lost notification. 0: read the key on every request. Behind a
    # transaction pooler (HUB_DB__POOLER=transaction) there is no cache, whatever this says.
    key_cache_seconds: Annotated[float, msgspec.Meta(ge=0, le=300)] = 10.0
    # The event loop of the API, in `hub serve` and `hub up` (whose worker runs on it too):
    # "uvloop" (the default where it is installed: a send's round trips to PostgreSQL and Redis
    # cost the API process about a tenth less CPU; docs/BENCHMARKS.md, issue 17 point 5) or
    # "asyncio". hub.loops.
    event_loop: EventLoop | None = None
    # A request whose body stops coming for this long is answered 408 `timeout` and its
    # connection freed (a client that sends half a body and waits holds a connection and, on
    # SIGTERM, the shutdown). A million-recipient send's body streams without such a pause.
    body_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    # A connection must send a request's line and headers within this long of its opening (a
    # later request: of its first byte), else it is answered 408 `timeout` and closed: a client
    # trickling them would hold a connection for ever (hub.http_server).
    head_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    # A request's line and headers larger than this are answered 431 `too_large` and the
    # connection closed (uvicorn alone gathers a header however long it grows).
    max_head_bytes: Annotated[int, msgspec.Meta(ge=8192, le=1_048_576)] = 65_536
    # On SIGTERM or Ctrl-C, requests still running this long after the API stopped taking new
    # ones are cut (uvicorn's timeout_graceful_shutdown): under systemd's TimeoutStopSec (90 s
    # in ops/deploy), so the worker beside `hub up` drains and the embedded servers stop.
    shutdown_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 60


# Units a second; at least one unit in about 17 minutes (a bound the OpenAPI document keeps).
Rate = Annotated[float, msgspec.Meta(ge=0.001, le=1e6)]
Burst = Annotated[float, msgspec.Meta(ge=1, le=1e9)]


class LimitsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Request-rate limits (hub.limits): token buckets per API key, per tenant and per
    division, in units.

    A read costs 1 unit, another write 2, a send 5, a roster import 20, a statement export 5;
    every request also costs 1 unit per 64 KiB of body (never more than a full bucket). The
    console's heavy writes (roster previews, a send) cost the same, from the signed-in person's
    bucket (the key's shape), the tenant's and the division's. The operator may override them
    per tenant (PUT /v1/tenants/{code}/rate-limits, `hub limits`).
    """

    # Units a second each key gains, and the most it may hold (a burst).
    key_rate: Rate = 20.0
    key_burst: Burst = 300.0
    # The same for all of a tenant's keys together.
    tenant_rate: Rate = 40.0
    tenant_burst: Burst = 600.0
    # The same for all the units of a division (province, prefecture or county) together, its
    # units' units included: a county does not multiply its limits by creating units. The
    # division itself is not charged to it. Never below the division's own tenant limits (an
    # override lifting a county lifts this); a unit's own override does not lift it.
    division_rate: Rate = 200.0
    division_burst: Burst = 3000.0
    # How soon every API process sees an operator's override (each reloads them this often).
    refresh_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # Redis not answering within this long twice running counts as down: the process then
    # limits on its own for `fallback_seconds` before it asks Redis again.
    redis_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    fallback_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0


class TenantsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The most units (tenants below the GB/T 2260 tree) one division may hold, counting every
    # unit below it: a county cannot draw the hub's SMS extensions (900,000 in all) dry.
    max_units_per_division: Annotated[int, msgspec.Meta(ge=1, le=999_999)] = 2000


class QuotaSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # A reservation not posted or voided within this many seconds expires (the sweeper voids it).
    reservation_ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 24 * 3600.0
    # Leases (escrow, hub/quota/sql/lease.sql): a tenant charged to pooled ancestors leases
    # this many segments of their quota at once and reserves from the lease with only its own
    # row locked (a send this big or bigger reserves on the chain directly); 0 turns leases off.
    lease_block: Annotated[int, msgspec.Meta(ge=0)] = 100
    # A lease not used up within this long (and at the latest at its month's end) is returned.
    lease_ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0


class DedupSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The same body to the same phone within this window reaches it once (any tenant).
    window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 24 * 3600.0
    # How long an Idempotency-Key's answer is kept (at least 24 h).
    idempotency_ttl_seconds: Annotated[float, msgspec.Meta(ge=24 * 3600.0)] = 24 * 3600.0


class MessagesSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The operator's quiet hours (Asia/Shanghai): normal and bulk sends wait them out, urgent
    # ones do not. A tenant may set its own (PUT /v1/tenants/{code}/quiet-hours).
    quiet_hours: bool = True
    quiet_starts: ClockTime = "22:00"
    quiet_ends: ClockTime = "08:00"
    # How far ahead `send_at` may be.
    schedule_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 90
    # How long a send caught by a review rule waits for a decision before it expires (its
    # quota released, its state cancelled with reason "review expired").
    review_hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 90)] = 72


class BillingSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # What a tenant alone would pay a carrier per segment, in micro-yuan (0.06 yuan): a whole
    # number of fen, so every line's list price is too and no allocation needs to exceed it.
    list_price_micros: Annotated[int, msgspec.Meta(ge=0, multiple_of=10_000)] = 60_000
    # A month may be closed this many days after it ends (late receipts arrive meanwhile).
    close_grace_days: Annotated[int, msgspec.Meta(ge=0, le=60)] = 3


GatewayName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}(?!\n)$")]
Carrier = Literal["中国移动", "中国联通", "中国电信", "中国广电", "unknown"]


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One SMS gateway the hub delivers through."""

    name: GatewayName
    kind: Literal["outbox", "kannel", "smpp", "aliyun"]
    # The carriers it takes; empty: all of them.
    carriers: list[Carrier] = []
    # Where its traffic goes while its circuit is open (it keeps failing).
    fallback: GatewayName | None = None
    # Shared by every worker: at most this many segments a second.
    rate: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    # Messages per gateway call (and per claim, lease and quota settlement): small keeps what a
    # crash leaves unknown small and pacing smooth. 500 for the outbox measured slower than 100
    # (bigger claims slow the API's own writes; docs/BENCHMARKS.md).
    chunk: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    # When a segment counts as used: once the gateway accepts it, or only once delivered.
    bills_on: Literal["accepted", "delivered"] = "accepted"
    # A receipt matches a message only if it comes within this long of the message being sent
    # (and only the newest message holding its reference): the validity a carrier gives a
    # message, after which its SMSC stops trying (72 h at the longest on China's carriers). A
    # gateway that reuses its ids (an SMSC restarted, a counter wrapped) never reaches an older
    # message; a later receipt is kept as unmatched.
    receipt_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 72 * 3600.0
    # Its callbacks to /v1/gateways/{name}/receipts and /inbound must carry this secret...
    secret: str = ""
    # ...or one of these: former secrets, still taken while the gateway is switched to the new
    # one (a rotation without refused callbacks; docs/OPERATIONS.md "Rotating secrets"). Remove
    # them once the gateway sends the new one.
    previous_secrets: list[str] = []
    # Address and credentials; what each means is the kind's own (see hub/delivery/gateways/).
    url: str = ""
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    username: str = ""
    password: str = ""
    # Kind-specific extras (an SMPP window, an Aliyun sign name), checked by the adapter.
    options: dict[str, str | int | float | bool] = {}


class DeliverySettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The hub's own number; a tenant's address is this plus its 6-digit SMS extension.
    service_number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,14}(?!\n)$")] = "10690000"
    # A JSON list of gateways (`HUB_DELIVERY__GATEWAYS='[{"name": …}]'`); by default the outbox.
    gateways: list[GatewayConfig] = msgspec.field(
        default_factory=lambda: [GatewayConfig(name="outbox", kind="outbox", rate=1e9)]
    )
    # Messages per delivery job (one job per gateway route per batch).
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=500)] = 500
    # Redis not taking a send's batches within this long (hung, not gone) counts as down: the
    # send is answered, and the sweeper enqueues its batches later (they are in PostgreSQL).
    enqueue_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    # A message not delivered within this long of being due expires (and its quota is voided).
    validity_seconds: Annotated[float, msgspec.Meta(gt=0)] = 6 * 3600.0
    # A claimed batch not finished within this long goes back to the queue (its worker died).
    lease_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    # Retries after a transient error: base * 2^attempt seconds, jittered, at most the cap.
    retry_base_seconds: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    retry_cap_seconds: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    # A gateway failing this many batches in a row is skipped for `circuit_seconds`.
    circuit_failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    circuit_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # A reply is linked to the tenant's newest send that asked for one and whose message to the
    # phone went at most this long before the reply came (7 days).
    reply_window_seconds: Annotated[float, msgspec.Meta(gt=0, le=90 * 86400)] = 7 * 86400.0
    # Tenants' webhooks may only reach public addresses (webhooks.is_public): a URL that is, or
    # resolves to, a private, loopback or link-local address, or an IPv6 form of one, is refused
    # (the hub's own network is not a tenant's to probe). True lets them in: tests, or a
    # deployment whose tenants' systems sit on the same private network. Odd spellings of an
    # IPv4 address (0177.0.0.1) are refused either way.
    webhooks_private_ok: bool = False


class ContactsSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Roster imports (POST /v1/contacts/import; the upload itself is at most 20 MiB, the route's
    # body limit). Sized to the largest legal roster with room to spare: a county's members are
    # tens of thousands of rows (openpyxl reads some 2,000 to 10,000 XLSX rows a second).
    # Rows read, empty ones and the header included; more answer 413.
    max_rows: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 100_000
    # Characters in one cell (CSV field or XLSX cell); longer answers 413. Python's csv module
    # stops any field at 131,072 characters, hence the ceiling.
    max_cell_chars: Annotated[int, msgspec.Meta(ge=100, le=131_072)] = 1_000
    # An XLSX's parts unzipped, all together (declared sizes are checked before reading and the
    # bytes counted while reading, since a zip's headers can lie); more answers 413.
    # 100,000 rows as openpyxl writes them (inline strings) unzip to about 40 MB.
    max_unzipped_bytes: Annotated[int, msgspec.Meta(ge=1_048_576)] = 128 * 1_048_576
    # An XLSX's shared strings (each distinct text once): a roster of 100,000 rows holds a few
    # hundred thousand; more answers 413 (3 million empty ones cost 80 s of CPU to read).
    max_shared_strings: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    # Seconds a roster may take to read (a thread's CPU, holding the GIL in turns with the
    # event loop); longer answers 413. The largest legal roster takes some 10 to 50 s.
    max_parse_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0


class DashboardSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # A session ends this long after sign-in (and at once on sign-out or when its key is revoked).
    session_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 30)] = 12.0
    # …and after this many minutes without a request (a browser left open on a shared desk).
    idle_minutes: Annotated[float, msgspec.Meta(gt=0, le=24 * 60 * 30)] = 60.0
    # Retired: sessions are kept in PostgreSQL (migration 0018) and need no signing secret. Still
    # accepted, so a configuration that sets it starts; the server warns that it is ignored.
    secret: str = ""
    # Who may sign in to the console with an API key instead of a login: "operator" (keys of
    # the root tenant 000000 only, the default), "off", or "any" (every key with
    # dashboard:read, as before people had accounts; kept for the older dashboard tests and
    # deprecated). Systems use keys on the API; people sign in as users.
    key_sign_in: Literal["operator", "off", "any"] = "operator"


class UsersSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # An invite link works once, for this long.
    invite_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 30)] = 48.0
    # Passwords: at least this long (and never containing the person's own names or phone).
    password_min: Annotated[int, msgspec.Meta(ge=8, le=64)] = 10
    # Failed sign-ins before the account locks; the lock lasts lock_seconds, doubling with each
    # further failure, up to lock_max_seconds. A success resets both.
    lock_after: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    lock_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    lock_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    # The second factor's SMS code: good for this long, for this many tries.
    code_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 300.0
    code_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    # Codes sent at most: one a minute per person, this many an hour per person and per
    # phone, this many a day per phone.
    code_gap_seconds: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    codes_per_hour: Annotated[int, msgspec.Meta(ge=1)] = 5
    codes_per_phone_day: Annotated[int, msgspec.Meta(ge=1)] = 10


Days = Annotated[int, msgspec.Meta(ge=1, le=3650)]


class RetentionSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How long personal data is kept (hub.retention; docs/DATA.md "Retention"): the nightly
    run (and `hub retention run`) erases or deletes what is older, in committed batches."""

    # Messages' phones and bodies (a tenant may choose shorter: PUT /v1/tenants/{code}/retention).
    messages_days: Days = 180
    # Replies (`inbound`): their phones and texts are erased; the row (and opt-out flag) stays.
    inbound_days: Days = 180
    # Ended opt-outs (`resubscriptions`: phone, reason, who). Opt-outs in force are never
    # erased: the phone is what keeps the hub from messaging it again.
    resubscriptions_days: Days = 365
    # Webhook pushes of replies, delivered or given up (`last_error` may echo the payload).
    webhook_deliveries_days: Days = 30
    # Stored Idempotency-Key answers (they list refused phones), whatever their TTL says.
    idempotency_keys_days: Days = 7
    # Receipts no message claimed.
    unmatched_receipts_days: Days = 7
    # What the outbox gateway was given (phone and the text as the phone shows it).
    outbox_days: Days = 30
    # The refused recipients of a send (`sends.rejects`): phones erased, reasons kept.
    rejects_days: Days = 180
    # Console sessions ended (expired or idle) this long ago; second-factor codes and invites
    # this long after they were made or expired.
    sessions_days: Days = 30
    user_codes_days: Days = 30
    user_invites_days: Days = 30
    # Anniversary greetings recorded for contacts since deleted.
    campaign_deliveries_days: Days = 30
    # Rows per transaction: each batch commits, so no lock outlives it.
    batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5000
    # The nightly run starts at this hour of the business day (Asia/Shanghai).
    run_hour: Annotated[int, msgspec.Meta(ge=0, le=23)] = 3


class PeopleSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The operator's key for a phone's HMAC-SHA256 (hub.people): an erased phone is kept only
    # so (`erased_phones`), and the operation log names a looked-up or erased phone so. Without
    # it the lookup and the erasure answer 503. Rotating it breaks matching: phones erased
    # under the old key are sent to again. To rotate, keep the old key in `previous_secrets`
    # (every key there is matched too) until every erased phone was erased again under the new
    # one (docs/DATA.md, "A person's data").
    secret: str = ""
    previous_secrets: list[str] = []


class ClockSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Start the hub's clock at this instant (ISO 8601 with an offset) and let it run on from
    # there, in Python and in PostgreSQL alike: for tests, drills and demos ("as if it were
    # 23:30 on 31 December"). Unset in production: the system clock.
    start: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class WorkerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The event loop of `hub worker`: "uvloop" (the default where it is installed: smpp34's
    # cross-thread wake-ups and asyncpg's round trips cost the worker about a quarter less CPU;
    # docs/BENCHMARKS.md, issue 17 point 2) or "asyncio". `hub up` runs its worker on the API's
    # loop (HUB_HTTP__EVENT_LOOP). hub.loops.
    event_loop: EventLoop | None = None


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    db: DbSettings = DbSettings()
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    tenants: TenantsSettings = TenantsSettings()
    quota: QuotaSettings = QuotaSettings()
    dedup: DedupSettings = DedupSettings()
    messages: MessagesSettings = MessagesSettings()
    billing: BillingSettings = BillingSettings()
    delivery: DeliverySettings = DeliverySettings()
    contacts: ContactsSettings = ContactsSettings()
    dashboard: DashboardSettings = DashboardSettings()
    users: UsersSettings = UsersSettings()
    limits: LimitsSettings = LimitsSettings()
    retention: RetentionSettings = RetentionSettings()
    people: PeopleSettings = PeopleSettings()
    clock: ClockSettings = ClockSettings()
    worker: WorkerSettings = WorkerSettings()
    # Where `hub up` keeps the embedded servers' data and its run file.
    data_dir: str = ".hub"
    log_level: str = "INFO"


def _is_setting(name: str) -> bool:
    return name.startswith(PREFIX) and not any(
        name == other or (other.endswith("_") and name.startswith(other)) for other in NOT_SETTINGS
    )


def _is_list(field_type: Any) -> bool:
    return getattr(field_type, "__origin__", None) is list


def _nest(environ: Mapping[str, str]) -> dict[str, Any]:
    """`{"HUB_DB__DSN": "x"}` → `{"db": {"dsn": "x"}}`, rejecting names that match no field."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not _is_setting(name):
            continue
        path = name[len(PREFIX) :].lower().split("__")
        struct: type[msgspec.Struct] = Settings
        node = tree
        for depth, key in enumerate(path):
            fields = {f.name: f.type for f in msgspec.structs.fields(struct)}
            if key not in fields:
                raise SettingsError(f"unknown setting {name}: no such option {key!r}")
            leaf = depth == len(path) - 1
            field_type = fields[key]
            is_struct = isinstance(field_type, type) and issubclass(field_type, msgspec.Struct)
            if leaf == is_struct:
                raise SettingsError(
                    f"unknown setting {name}: {key!r} is a group, not a value"
                    if is_struct
                    else f"unknown setting {name}: {key!r} has no parts"
                )
            if leaf:
                # A list (the gateways) is given as JSON.
                node[key] = msgspec.json.decode(value) if _is_list(field_type) else value
            else:
                struct = field_type
                node = node.setdefault(key, {})
    return tree


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment (os.environ by default)."""
    data = _nest(os.environ if environ is None else environ)
    try:
        return msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says "… - at `$.db.pool_max`"; name the variable the operator actually set.
        message = re.sub(
            r"`\$\.([a-z_.]+)`", lambda m: PREFIX + m[1].upper().replace(".", "__"), str(exc)
        )
        raise SettingsError(f"invalid setting: {message}") from exc
