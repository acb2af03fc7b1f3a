"""Issue 14's journeys in a real browser (Debian's Chromium through Playwright, as
test_browser.py), one test each, against the hub served on a real port. Screenshots of every
step go to test-artifacts/journey-*.png.

1. A 发送 person's day: the roster imported (two bad lines shown with their line and why, in
   Chinese), a notice to the tag 书记 with `{姓名}` and "ask for a reply", the preview's numbers
   equal to what the API answers for the same request, sent through a carrier (the fake
   Alibaba-style provider over HTTP, tests/peers/aliyun.py) by a running worker, each phone
   reading its own name, receipts and a reply arriving through the gateway callbacks the
   carrier calls, and a reminder to exactly the rest.
2. A 发送 person reaches no administration, and the API agrees: every console page and form
   and every API route the app serves is asked (the lists come from the app's own routes).
3. The second factor: an admin with the right password and no code opens nothing; wrong codes
   are refused until the code dies; a fresh code lets them in.

The invite itself and the 375 px compose journey (with its double click) are in
test_accounts_browser.py and test_compose_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from arq.connections import ArqRedis
from litestar import Litestar
from litestar.routes import HTTPRoute
from playwright.async_api import Browser, FilePayload, Page

from hub import calendar
from hub.app import create_app
from hub.dashboard.controllers import OWING_CODE, PUBLIC, number, yuan
from hub.messages.schemas import SendRequest
from hub.settings import GatewayConfig, Settings
from tenants.scopes import ROLE_SCOPES, TEMPLATES_REVIEWED_BEFORE, Role, Scope
from tests.factories import bearer, grant_ahead, make_key, make_small_tree
from tests.integration.dashboard.test_browser import browser, shot  # noqa: F401 - a fixture
from tests.integration.delivery.conftest import (
    eventually,
    free_port,
    running_worker,
    serving_hub,
    wait_statuses,
    with_gateways,
)
from tests.integration.users.conftest import PASSWORD, last_code, make_user
from tests.peers.aliyun import AliyunFake, running

pytestmark = pytest.mark.slow

SECRET = "journey-gateway-secret"
SENDER = "jj.sender"  # 发送 in 锦江区 (510104)
ADMIN = "sc.admin"  # 管理 in 四川省 (510000): owes the SMS code
ADMIN_PHONE = "+8613700137000"
NOTICE = "同志：请于周五下午三点到三楼会议室开会，回复1确认参会"
BODY = "{姓名}" + NOTICE
# Line 1 is the header; line 4 has a bad phone, line 5 no name; 孙七 is no 书记.
ROSTER = (
    "姓名,手机,标签\n"
    "张三,13800138001,书记\n"
    "李四,13900139002,书记\n"
    "王五,12345,书记\n"
    ",13600136003,书记\n"
    "赵六,18612345674,书记、组织委员\n"
    "孙七,13311112225,组织委员\n"
)
SECRETARIES = {"13800138001": "张三", "13900139002": "李四", "18612345674": "赵六"}
REPLIER = "13800138001"


class Journey(msgspec.Struct, frozen=True):
    url: str
    dsn: str
    settings: Settings
    fake: AliyunFake
    county_key: str  # 510104, every scope: the county's own system calling the API


@pytest.fixture
def carrier() -> Iterator[AliyunFake]:
    with running(AliyunFake()) as fake:
        yield fake


@pytest.fixture
async def journey(
    settings: Settings, fresh_db: str, redis: ArqRedis, carrier: AliyunFake
) -> AsyncIterator[Journey]:
    """The small tree with quota, a 发送 person in 锦江区, an admin in 四川省, and the hub
    serving it, its one gateway the fake carrier (whose pushes come back to this hub)."""
    conn = await asyncpg.connect(fresh_db)
    try:
        await make_small_tree(conn)
        await grant_ahead(conn, {"000000": 10_000, "510000": 1_000, "510100": 500, "510104": 100})
        await make_user(conn, "510104", SENDER, {Role.SEND})
        await make_user(conn, "510000", ADMIN, {Role.ADMIN}, phone=ADMIN_PHONE)
        county_key = await make_key(conn, "510104")
    finally:
        await conn.close()
    ali = GatewayConfig(
        name="ali",
        kind="aliyun",
        url=carrier.url,
        username=carrier.access_key_id,
        password=carrier.secret,
        secret=SECRET,
        rate=1e6,
        options={"template_code": carrier.template_code},
    )
    # Codes may be asked for again at once (the journey of the second factor asks twice).
    users = msgspec.structs.replace(settings.users, code_gap_seconds=0)
    live = with_gateways(
        msgspec.structs.replace(
            settings, db=msgspec.structs.replace(settings.db, dsn=fresh_db), users=users
        ),
        ali,
    )
    async with serving_hub(live, redis, free_port()) as url:
        yield Journey(url=url, dsn=fresh_db, settings=live, fake=carrier, county_key=county_key)


# --- helpers -------------------------------------------------------------------------------


async def _sign_in(page: Page, url: str, login: str) -> None:
    await page.goto(f"{url}/dashboard/login")
    await page.fill("#login", login)
    await page.fill("#password", PASSWORD)
    await page.click("#sign-in")


async def _fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def _statuses(dsn: str, send_id: int, expected: dict[str, int]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await wait_statuses(conn, send_id, expected, patience=30)
    finally:
        await conn.close()


async def _texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in await page.locator(selector).all_inner_texts()]


def _routes(app: Litestar, prefix: str) -> list[tuple[str, str, dict[str, Any], list[str]]]:
    """Every (method, path, opt, guard names) the app serves under `prefix`, OPTIONS and HEAD
    aside: the lists the journeys walk come from the app, not from a hand-kept list."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith(prefix):
            continue
        for handler in route.route_handlers:
            guards = [g.__name__ for g in handler.guards or []]
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                found.append((method, route.path, dict(handler.opt), guards))
    return sorted(found, key=lambda r: (r[1], r[0]))


def _fill(path: str, values: dict[str, str]) -> str:
    """A route's path with its parameters filled in (`{code:str}` → values["code"])."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m[1]], path)


def _needs(guards: list[str]) -> Scope:
    """The scope an API route's guard asks for (tenants.auth.require names each guard
    `require_<scope>`); a guard of another name fails the test rather than being skipped."""
    [guard] = guards
    return Scope[guard.removeprefix("require_").upper()]


# --- 1. a 发送 person's day ------------------------------------------------------------------


async def test_a_senders_day_roster_notice_receipts_reply_and_reminder(
    journey: Journey,
    browser: Browser,  # noqa: F811 - the fixture imported above
) -> None:
    url, fake = journey.url, journey.fake
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    await _sign_in(page, url, SENDER)
    await page.wait_for_url("**/dashboard/t/510104")  # no code for a sender
    await shot(page, "journey-1-01-signed-in")

    # The roster: a GBK CSV as Chinese Excel saves it, previewed before anything is written.
    await page.click("#nav-contacts")
    await page.wait_for_url("**/dashboard/contacts")
    await page.click("#import")
    await page.wait_for_url("**/dashboard/contacts/import")
    roster = FilePayload(name="书记名册.csv", mimeType="text/csv", buffer=ROSTER.encode("gbk"))
    await page.set_input_files("#upload input[name=file]", files=[roster])
    await page.click("#upload button[type=submit]")
    await page.locator("#preview").wait_for()
    problems = page.locator("#problems tbody tr")
    assert await problems.evaluate_all("rows => rows.map(r => r.dataset.line)") == ["4", "5"]
    assert await _texts(page, "#problems tbody td.reason") == [
        "手机号 12345：号码无效",
        "姓名为空",
    ]
    assert await page.locator("#rows tbody tr").count() == 4
    assert "共 6 行，可导入 4 人，有问题的行 2" in await page.inner_text("#preview")
    await shot(page, "journey-1-02-roster-preview")
    await page.click("#confirm button")
    await page.locator("#result").wait_for()
    assert "新增 4" in await page.inner_text("#result")
    assert await _texts(page, "#rejected tbody td.reason") == [
        "手机号 12345：号码无效",
        "姓名为空",
    ]
    await shot(page, "journey-1-03-roster-imported")

    # The notice to 书记, asking for a reply; compose.js fills the preview from the API's.
    await page.click("#nav-compose")
    await page.wait_for_url("**/dashboard/compose")
    tag = page.locator("#tags label.tag", has_text="书记")
    assert "3 / 3" in await tag.inner_text()  # three 书记 in the roster (own / with subtree)
    await tag.locator("input").check()
    await page.fill("#body", BODY)
    await page.check("#reply")
    await page.click("#preview-button")
    await page.wait_for_function(
        "() => (document.querySelector('#preview-text') || {}).textContent"
        " && document.querySelector('#pv-recipients').textContent.trim() === '3'"
    )
    await shot(page, "journey-1-04-compose-preview")
    request = {"to_tags": ["书记"], "body": BODY, "reply_wanted": True}
    async with httpx.AsyncClient(base_url=url) as api:
        asked = await api.post(
            "/v1/messages/preview", json=request, headers=bearer(journey.county_key)
        )
    assert asked.status_code == 200, asked.text
    preview = asked.json()
    encoding = "GSM-7" if preview["encoding"] == "gsm7" else "UCS-2"
    shown = {
        "#pv-recipients": number(preview["counts"]["accepted"]),
        "#pv-segments-each": f"{encoding} · {preview['segments_per_message']} 条",
        "#pv-segments": f"{number(preview['segments'])} 条",
        "#pv-list": yuan(preview["list_price_micros"]),
        "#pv-cost": yuan(preview["cost_micros"]),
        "#pv-quota": f"{number(preview['quota_available'])} 条",
        "#pv-signature": preview["signature"],
        "#preview-text": preview["text"],
    }
    for selector, want in shown.items():
        assert (await page.inner_text(selector)).strip() == want, selector
    example = (await page.inner_text("#preview-example")).strip()
    assert example == f"示例（第一位收件人收到）：{preview['example']}"
    assert preview["example"].startswith("【锦江区】张三同志：")  # the roster's first 书记
    assert preview["counts"]["accepted"] == 3
    token = await page.input_value("#compose-form input[name=token]")

    await page.click("#send-button")
    await page.wait_for_url(re.compile(r".*/dashboard/sends/\d+$"))
    send_id = int(page.url.rsplit("/", 1)[1])
    await shot(page, "journey-1-05-sent")
    # The real POST /v1/messages for the same request: the console's send is the API's, under
    # the form's Idempotency-Key (compose.py: `dashboard:<token>`), so the API answers with
    # the very answer that send got, and makes no second one.
    body = msgspec.json.encode(SendRequest(to_tags=["书记"], body=BODY, reply_wanted=True))
    headers = {
        **bearer(journey.county_key),
        "Idempotency-Key": f"dashboard:{token}",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(base_url=url) as api:
        posted = await api.post("/v1/messages", content=body, headers=headers)
        assert posted.status_code == 202, posted.text
        assert posted.headers["idempotent-replayed"] == "true"
        answer = posted.json()
        assert answer["id"] == send_id
        for field in ("counts", "segments_per_message", "segments", "list_price_micros"):
            assert answer[field] == preview[field], field
        period = calendar.period_text(calendar.current_period())
        quota = await api.get(
            f"/v1/tenants/510104/quota/{period}", headers=bearer(journey.county_key)
        )
        assert quota.json()["available"] == preview["quota_available"] - preview["segments"]
    assert len(await _fetch(journey.dsn, "SELECT id FROM sends WHERE actor LIKE 'user:%'")) == 1

    async with running_worker(journey.settings):
        # The carrier takes the three; its receipts come back through the hub's callback.
        await eventually(lambda: len(fake.sent) == 3, patience=30)
        # Each secretary got the notice with their own name (the roster's 姓名 for `{姓名}`).
        received = {s.phone: s.text for s in fake.sent}
        assert received == {p: f"【锦江区】{name}{NOTICE}" for p, name in SECRETARIES.items()}
        await _statuses(journey.dsn, send_id, {"sent": 3})
        pushed = await fake.push(f"{url}/v1/gateways/ali/receipts?secret={SECRET}", fake.reports())
        assert pushed[-1].acknowledged
        await _statuses(journey.dsn, send_id, {"delivered": 3})
        await page.reload()
        assert (await page.inner_text('.pill[data-status="delivered"]')).strip() == "已送达 3"
        assert await _texts(page, '#recipients td[data-status="delivered"]') == ["已送达"] * 3
        await shot(page, "journey-1-06-delivered")

        # 张三 answers "1" (an Alibaba SmsUp push to the county's extension).
        extension = (
            await _fetch(journey.dsn, "SELECT sms_extension FROM tenants WHERE code = '510104'")
        )[0][0]
        now = calendar.beijing(calendar.now()).strftime("%Y-%m-%d %H:%M:%S")
        reply = {
            "phone_number": REPLIER,
            "content": "1",
            "dest_code": extension,
            "sequence_id": 1,
            "send_time": now,
            "sign_name": "锦江区",
        }
        pushed = await fake.push(f"{url}/v1/gateways/ali/inbound?secret={SECRET}", [reply])
        assert pushed[-1].acknowledged
        await page.reload()
        assert await _texts(page, "#replies tbody td:nth-child(1)") == [f"+86{REPLIER}"]
        assert await _texts(page, "#replies tbody td:nth-child(2)") == ["1"]
        answered = await page.locator("#recipients tbody tr").evaluate_all(
            "rows => Object.fromEntries(rows.map(r => "
            "[r.cells[0].textContent.trim(), r.cells[r.cells.length - 1].textContent.trim()]))"
        )
        assert answered == {f"+86{p}": "是" if p == REPLIER else "否" for p in SECRETARIES}
        rest = sorted(f"+86{p}" for p in SECRETARIES if p != REPLIER)
        waiting = sorted(f"+86{p}（{n}）" for p, n in SECRETARIES.items() if p != REPLIER)
        assert sorted((await page.inner_text("#waiting")).split("、")) == waiting
        assert (await page.inner_text("#waiting-count")).strip() == "未回复 2 人"
        await shot(page, "journey-1-07-replied")

        # 提醒未回复的人: a new send, linked to this one, to exactly the rest.
        await page.click("#remind-form button[type=submit]")
        await page.wait_for_url(re.compile(r".*/dashboard/sends/\d+\?made=remind$"))
        remind_id = int(page.url.split("?")[0].rsplit("/", 1)[1])
        assert remind_id != send_id
        assert await page.get_attribute("#follows a", "href") == f"/dashboard/sends/{send_id}"
        await shot(page, "journey-1-08-reminder")
        async with httpx.AsyncClient(base_url=url) as api:
            listed = await api.get(
                f"/v1/messages/{remind_id}/recipients", headers=bearer(journey.county_key)
            )
        assert sorted(m["phone"] for m in listed.json()["items"]) == rest
        await eventually(lambda: len(fake.sent) == 5, patience=30)  # let the worker finish
        reminded = {s.phone: s.text for s in fake.sent[3:]}
    await context.close()
    assert reminded == {
        phone: f"【锦江区】提醒：{name}{NOTICE}"
        for phone, name in SECRETARIES.items()
        if phone != REPLIER
    }


# --- 2. a 发送 person reaches no administration ----------------------------------------------

# What a 发送 person meets on each console page (GET), by route: every route the app serves
# under /dashboard is here, so a new page is classified before it ships. 403: administration
# (管理: units, keys, users, the operation log; 审核: the review queue) and money (财务).
SENDER_PAGES = {
    "/dashboard": 200,
    "/dashboard/admin/keys": 403,
    "/dashboard/admin/units": 403,
    # Where the tenant's replies go: 管理's (tenants:write) in the console.
    "/dashboard/admin/webhook": 403,
    "/dashboard/billing": 403,
    "/dashboard/billing/{period:str}/statement.csv": 403,
    "/dashboard/billing/{period:str}/statement.xlsx": 403,
    "/dashboard/code": 200,
    "/dashboard/compose": 200,
    "/dashboard/contacts": 200,
    "/dashboard/contacts/export.csv": 200,
    "/dashboard/contacts/export.xlsx": 200,
    "/dashboard/contacts/import": 200,
    "/dashboard/contacts/{contact_id:int}": 200,
    "/dashboard/invite/{token:str}": 404,
    "/dashboard/login": 200,
    "/dashboard/reviews": 403,
    "/dashboard/sends": 200,
    "/dashboard/sends/{send_id:int}": 200,
    "/dashboard/sends/{send_id:int}/results.xlsx": 200,
    "/dashboard/sessions": 200,
    "/dashboard/signatures": 200,
    "/dashboard/static/{file_path:path}": 200,
    "/dashboard/t/{code:str}": 200,
    "/dashboard/t/{code:str}/activity": 200,
    # The archive (档案记实): the notices' texts, read with messages:read like the sends.
    "/dashboard/t/{code:str}/archive/{name:str}": 200,
    "/dashboard/t/{code:str}/operations": 403,
    "/dashboard/t/{code:str}/operations.xlsx": 403,
    "/dashboard/templates": 200,
    "/dashboard/users": 403,
}
# The console's forms that administer (管理, 审核): each refuses a 发送 person. The others
# (sending, the roster, signing in and out, one's own sessions) are theirs to use.
ADMIN_FORMS = {
    "/dashboard/admin/keys",
    "/dashboard/admin/keys/{prefix:str}/revoke",
    "/dashboard/admin/units",
    "/dashboard/admin/units/{code:str}/status",
    "/dashboard/admin/webhook",
    "/dashboard/reviews/signatures/{item_id:int}",
    "/dashboard/reviews/sends/{item_id:int}",
    "/dashboard/reviews/templates/{item_id:int}",
    "/dashboard/signatures",
    "/dashboard/t/{code:str}/quota",
    "/dashboard/users/invite",
    "/dashboard/users/{login:str}",
}
OTHER_FORMS = {
    "/dashboard/code",
    "/dashboard/code/send",
    "/dashboard/compose/preview",
    "/dashboard/compose/roster",
    "/dashboard/compose/send",
    "/dashboard/contacts/import",
    "/dashboard/contacts/import/confirm",
    "/dashboard/contacts/opt-outs/{phone:str}/resubscribe",
    "/dashboard/contacts/{contact_id:int}",
    "/dashboard/contacts/{contact_id:int}/delete",
    "/dashboard/invite/{token:str}",
    "/dashboard/login",
    "/dashboard/logout",
    "/dashboard/logout/everywhere",
    "/dashboard/sends/{send_id:int}/remind",
    "/dashboard/sends/{send_id:int}/resend",
    "/dashboard/sessions/password",
    "/dashboard/sessions/{session_id:int}/end",
    "/dashboard/templates",
}


async def test_a_sender_reaches_no_administration_and_the_api_agrees(
    journey: Journey,
    browser: Browser,  # noqa: F811 - the fixture imported above
) -> None:
    url = journey.url
    app = create_app(journey.settings)  # only read for its routes: nothing is connected
    send_scopes = ROLE_SCOPES[Role.SEND]
    # Something of the county's own to open: a contact and a send (by its system's key).
    async with httpx.AsyncClient(base_url=url) as api:
        imported = await api.post(
            "/v1/contacts/import",
            content=ROSTER.encode(),
            headers={**bearer(journey.county_key), "Content-Type": "text/csv"},
        )
        assert imported.status_code == 200, imported.text
        sent = await api.post(
            "/v1/messages",
            json={"to": ["13800138001"], "body": "明天上午九点开会"},
            headers=bearer(journey.county_key),
        )
        assert sent.status_code == 202, sent.text
    contact = (await _fetch(journey.dsn, "SELECT min(id) FROM contacts"))[0][0]
    key = await _key(journey.dsn, send_scopes)  # exactly the 发送 role's scopes
    before = await _counts(journey.dsn)
    values = {
        "code": "510104",
        "period": calendar.period_text(calendar.current_period()),
        "contact_id": str(contact),
        "send_id": str(sent.json()["id"]),
        "token": "x" * 43,
        "file_path": "dashboard.css",
        "prefix": "abcdefgh",
        "login": SENDER,
        "item_id": "1",
        "template_id": "1",
        "proposal_id": "1",
        "campaign_id": "1",
        "phone": "+8613800138001",
        "session_id": "1",
        "name": calendar.period_text(calendar.current_period()),  # the month's archive page
    }

    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    await _sign_in(page, url, SENDER)
    await page.wait_for_url("**/dashboard/t/510104")

    # Every console page, as this person's browser asks it.
    gets = [path for method, path, _, _ in _routes(app, "/dashboard") if method == "GET"]
    assert sorted(gets) == sorted(SENDER_PAGES), "classify each console page in SENDER_PAGES"
    refused = []
    for path in gets:
        answer = await page.request.get(f"{url}{_fill(path, values)}")
        assert answer.status == SENDER_PAGES[path], (path, answer.status)
        if answer.status == 403:
            refused.append(path)
            assert "您的角色没有" in await answer.text(), path  # a person, not a key
    # …and as it shows one of them.
    await page.goto(f"{url}/dashboard/admin/units")
    assert "您的角色没有 tenants:write 权限" in await page.inner_text("main")
    await shot(page, "journey-2-01-units-refused")

    # Navigation offers none of them, on any page of the console's menu.
    await page.goto(f"{url}/dashboard/t/510104/activity")
    assert await page.locator("#child-limits form").count() == 0  # no quota form either
    assert "您的角色没有 quota:write 权限" in await page.inner_text("#no-quota-scope")
    await shot(page, "journey-2-02-no-quota-form")
    menu = await page.locator("header nav a").evaluate_all("links => links.map(a => a.href)")
    for link in menu:
        await page.goto(link)
        hrefs = await page.locator("a[href]").evaluate_all(
            "links => links.map(a => new URL(a.href).pathname)"
        )
        blocked = [re.compile("^" + _fill(p, {k: "[^/]+" for k in values}) + "$") for p in refused]
        offered = [h for h in hrefs if any(b.match(h) for b in blocked)]
        assert offered == [], (link, offered)
    await shot(page, "journey-2-03-menu")

    # Every administering form, posted from this page with the person's session: 403.
    posts = {path for method, path, _, _ in _routes(app, "/dashboard") if method == "POST"}
    assert posts == ADMIN_FORMS | OTHER_FORMS, "classify each console form"
    origin = {"Origin": url}
    for path in sorted(ADMIN_FORMS):
        answer = await page.request.post(
            f"{url}{_fill(path, values)}", form={"tenant": "510104"}, headers=origin
        )
        assert answer.status == 403, (path, answer.status)
        assert "您的角色没有" in await answer.text(), path  # refused for the role, not the origin
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    await context.close()

    # The API agrees. Every route whose guard asks a scope the 发送 role lacks: the person's
    # session cookie is no key (401), and a key holding exactly the 发送 role's scopes is
    # refused (403) — but for deciding a template, which a key may still do with
    # messages:write during the reviews:write transition (tenants.scopes.reviewing).
    checked = 0
    async with httpx.AsyncClient(base_url=url, cookies=cookies) as api:
        for method, path, _, guards in _routes(app, "/v1"):
            if path.startswith("/v1/gateways/"):  # the carriers' callbacks: their own secret
                continue
            if not guards:  # only "who am I" goes unguarded; any other route must have one
                assert path == "/v1/me", (method, path)
                continue
            need = _needs(guards)
            if need in send_scopes:
                continue
            target = _fill(path, values)
            as_person = await api.request(method, target)
            assert as_person.status_code == 401, (method, path, as_person.text)
            as_key = await api.request(method, target, headers=bearer(key))
            transition = need == Scope.REVIEWS_WRITE and path.startswith("/v1/templates/")
            if transition and TEMPLATES_REVIEWED_BEFORE in send_scopes:
                assert as_key.status_code == 400, (method, path)  # past the guard: no body
                continue
            assert as_key.status_code == 403, (method, path, as_key.text)
            assert as_key.json()["scope"] == need.value, (method, path)
            checked += 1
    assert checked >= 20  # units, keys, quota, users, the log, reviews, money, quiet hours …
    # Nothing was changed by any of it.
    assert await _counts(journey.dsn) == before


async def _counts(dsn: str) -> dict[str, int]:
    """What administration would change: units, keys, users, limits, proposals."""
    tables = ("tenants", "api_keys", "users", "quota_entries", "signatures")
    return {t: (await _fetch(dsn, f"SELECT count(*) FROM {t}"))[0][0] for t in tables}


async def _key(dsn: str, scopes: frozenset[Scope]) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await make_key(conn, "510104", scopes)
    finally:
        await conn.close()


# --- 3. the second factor ------------------------------------------------------------------


async def test_the_second_factor_blocks_an_admin_until_the_right_code(
    journey: Journey,
    browser: Browser,  # noqa: F811 - the fixture imported above
) -> None:
    url = journey.url
    app = create_app(journey.settings)
    values = {
        "code": "510000",
        "period": calendar.period_text(calendar.current_period()),
        "contact_id": "1",
        "send_id": "1",
        "file_path": "dashboard.css",
        "name": calendar.period_text(calendar.current_period()),
    }
    # Every console page a session may open (sign-in, sign-out, invites and the code page
    # itself are open before the code; static files are no page).
    pages = [
        _fill(path, values)
        for method, path, opt, _ in _routes(app, "/dashboard")
        if method == "GET"
        and not opt.get(PUBLIC)
        and not opt.get(OWING_CODE)
        and not path.startswith("/dashboard/static/")
    ]
    assert len(pages) >= 20

    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    await _sign_in(page, url, ADMIN)  # the right password
    await page.wait_for_url("**/dashboard/code")
    # No menu of pages it cannot open yet; signing out stays.
    assert await page.locator("header nav").count() == 0
    assert await page.locator("#sign-out").is_visible()
    await shot(page, "journey-3-01-code-asked")
    for path in pages:
        await page.goto(f"{url}{path}")
        assert page.url == f"{url}/dashboard/code", path
    first = await _code(journey.dsn)

    # Wrong codes: refused, counted, until the code dies; then the right one is refused too.
    wrong = "000000" if first != "000000" else "111111"
    for left in (4, 3, 2, 1):
        await page.fill("#code", wrong)
        await page.click("#enter-code")
        error = page.locator("#code-error")
        await error.wait_for()
        assert (await error.inner_text()).strip() == f"验证码不正确，还可尝试 {left} 次"
        if left == 4:
            await shot(page, "journey-3-02-wrong-code")
    await page.fill("#code", wrong)
    await page.click("#enter-code")
    assert "请重新获取" in await page.inner_text("#code-error")
    await page.fill("#code", first)
    await page.click("#enter-code")
    assert (await page.inner_text("#code-error")).strip() == "验证码已失效，请重新获取"
    await shot(page, "journey-3-03-code-dead")
    for path in ("/dashboard/t/510000", "/dashboard/users", "/dashboard/admin/units"):
        await page.goto(f"{url}{path}")
        assert page.url == f"{url}/dashboard/code", path

    # A fresh code, entered right: the console opens, every page of it.
    await page.click("#send-code")
    await page.locator("#code-sent").wait_for()
    fresh = await _code(journey.dsn)
    await page.fill("#code", fresh)
    await page.click("#enter-code")
    await page.wait_for_url("**/dashboard/t/510000")
    assert await page.locator("#nav-users").is_visible()
    await shot(page, "journey-3-04-in")
    for path in ("/dashboard/users", "/dashboard/admin/units", "/dashboard/t/510000/operations"):
        opened = await page.goto(f"{url}{path}")
        assert opened is not None
        assert opened.status == 200, path
        assert page.url == f"{url}{path}"
    await context.close()
    # Two codes went out, both to the admin's phone, from the operator's root tenant.
    sends = await _fetch(
        journey.dsn,
        "SELECT m.phone FROM sends s JOIN messages m ON m.send_id = s.id WHERE s.actor LIKE $1",
        "system:%",
    )
    assert [r["phone"] for r in sends] == [ADMIN_PHONE] * 2


async def _code(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return await last_code(conn, ADMIN_PHONE)
    finally:
        await conn.close()
