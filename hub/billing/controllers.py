"""Billing routes: the operator's rate cards; the running usage estimate."""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from hub import calendar, reads
from hub.billing import exports, service
from hub.billing.schemas import (
    CloseSummary,
    RateCard,
    RateCardIn,
    RateCardList,
    Statement,
    UsageView,
)
from hub.calendar import PERIOD_PATTERN, parse_period
from hub.errors import ApiError, error_responses
from hub.health import tally as tallied
from hub.oplog import service as oplog
from hub.reads import ReadConn
from hub.settings import Carrier
from tenants.auth import require
from tenants.controllers import AuthedRequest, Conn
from tenants.scopes import Data, Scope


class BillingController(Controller):
    path = "/v1/billing"
    tags = ["billing"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/rate-cards",
        guards=[require(Scope.BILLING_WRITE)],
        responses=error_responses(403, 409, 422),
        status_code=HTTP_201_CREATED,
        summary="Add a carrier's tiered rate card from a month on (the hub operator only)",
    )
    async def add_card(
        self, request: AuthedRequest, conn: Conn, data: JSONBody[RateCardIn]
    ) -> RateCard:
        service.require_operator(request.user)
        card = await service.add_card(conn, data, request.user.actor)
        await oplog.record(conn, request.user, **service.card_logged(request.user.tenant_id, card))
        return card

    @get(
        "/rate-cards",
        guards=[require(Data.MONEY)],
        responses=error_responses(422),
        summary="Rate cards, per carrier newest first",
    )
    async def list_cards(
        self,
        conn: Conn,
        carrier: Annotated[Carrier | None, QueryParameter(description="one carrier")] = None,
    ) -> RateCardList:
        return RateCardList(items=await service.list_cards(conn, carrier))


Period = Annotated[str, PathParameter(pattern=PERIOD_PATTERN, description="YYYY-MM")]


class CloseController(Controller):
    path = "/v1/billing/{period:str}"
    tags = ["billing"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/close",
        guards=[require(Scope.BILLING_WRITE)],
        responses=error_responses(403, 409, 422),
        status_code=HTTP_200_OK,
        summary="Close a month (after its grace window): the hub's cost allocated to tenants",
    )
    async def close(
        self, request: AuthedRequest, conn: Conn, state: State, period: Period
    ) -> CloseSummary:
        service.require_operator(request.user)
        billing = state.settings.billing
        month = _month(period)
        # Timed for /metrics (hub.health.tally) when this call does the close; a repeat
        # answers the summary at once and is not a close.
        closing = await service.closed_at(conn, month) is None
        started = time.monotonic()
        try:
            closed = await service.close_period(
                conn,
                month,
                request.user.actor,
                grace_days=billing.close_grace_days,
                default_list_price=billing.list_price_micros,
            )
        except ApiError:
            raise  # refused (too early, an older month open): the close did not fail
        except Exception:
            state.tally.count(tallied.CLOSE_FAILURES)
            raise
        if closing:
            state.tally.closed(time.monotonic() - started, calendar.now().timestamp())
        detail = {"lines": closed.lines, "cost_micros": closed.cost_micros}
        await oplog.record(
            conn,
            request.user,
            "billing.close",
            tenant_id=request.user.tenant_id,
            object=f"period:{closed.period}",
            detail=detail,
        )
        return closed

    @get(
        "/statement",
        guards=[require(Data.MONEY)],
        responses={
            200: ResponseSpec(Statement, description="The statement, its lines streamed"),
            **error_responses(404, 422),
        },
        summary="A closed month for the caller's subtree, per tenant and carrier and per level",
    )
    async def statement(
        self, request: AuthedRequest, state: State, period: Period
    ) -> Response[Any]:
        return await _export(request, state, period, "json")

    @get(
        "/statement.csv",
        guards=[require(Data.MONEY)],
        media_type="text/csv",
        responses=error_responses(404, 422),
        summary="The statement as CSV (UTF-8 with a BOM, Chinese headers, yuan), streamed",
    )
    async def statement_csv(
        self, request: AuthedRequest, state: State, period: Period
    ) -> Response[Any]:
        return await _export(request, state, period, "csv")

    @get(
        "/statement.xlsx",
        guards=[require(Data.MONEY)],
        media_type=exports.MEDIA["xlsx"],
        responses=error_responses(404, 422),
        summary="The statement as XLSX: per-level totals, then every line and a totals row",
    )
    async def statement_xlsx(
        self, request: AuthedRequest, state: State, period: Period
    ) -> Response[Any]:
        return await _export(request, state, period, "xlsx")


async def _export(
    request: AuthedRequest, state: State, period: str, fmt: exports.Format
) -> Response[Any]:
    # No request transaction (`conn`): the export reads on a connection of its own while it
    # streams, after the handler has returned; on the standby when it keeps up (hub.reads).
    db = await reads.reader(state, request.scope)
    return await exports.statement_export(db, request.user, _month(period), fmt)


def _month(period: str) -> date:
    """A period whose pattern Litestar has already checked, as its first day."""
    month = parse_period(period)
    assert month is not None
    return month


class UsageController(Controller):
    path = "/v1/usage"
    tags = ["billing"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        guards=[require(Data.MONEY)],
        responses=error_responses(422),
        summary="The month so far: segments, estimated cost, list price, savings, dedup savings",
    )
    async def usage(
        self,
        request: AuthedRequest,
        read_conn: ReadConn,
        state: State,
        period: Annotated[str, QueryParameter(pattern=PERIOD_PATTERN, description="YYYY-MM")],
        subtree: Annotated[bool, QueryParameter(description="every tenant below too")] = False,
    ) -> UsageView:
        return await service.estimate(
            read_conn,
            request.user.tenant_path,
            _month(period),
            subtree=subtree,
            default_list_price=state.settings.billing.list_price_micros,
        )
