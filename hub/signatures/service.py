"""Signatures: a tenant's 【signature】 is proposed, then approved or rejected by a tenant above.

A proposal answers to the highest tenant that could have made it: the proposing key's own
tenant, or the tenant of a key in the chain that created that key (whoever creates a key sees
its secret). Only a tenant strictly above that one may approve or reject it. So a county cannot
approve what it proposed for itself or for a unit of its own, at the unit's creation or later,
nor what a key it created for the unit proposed. The operator (the root) has no one above it:
what it proposes is approved at once, and it may decide any proposal.

A tenant sends under its approved signature only (`tenants.signature`, copied onto each send
when it is accepted, so a later approval never rewrites what was accepted). Until one is
approved its sends answer 409 naming the proposal and whose approval it awaits. A tenant has at
most one pending proposal: a new one replaces it, unless the pending one answers to a tenant
above the new one's (a county cannot withdraw what its city proposed for it).
"""

from __future__ import annotations

import asyncpg
import msgspec

from hub.errors import Conflict, Forbidden, NotFound
from hub.oplog import service as oplog
from hub.signatures import repository as sql
from hub.signatures.repository import ProposalRow
from hub.signatures.schemas import Proposal, SignatureState
from hub.templates.schemas import Review
from tenants import service as tenants
from tenants import signatures as tenant_signatures
from tenants.repository import TenantRow
from tenants.service import Principal


class SignatureNotApproved(Conflict):
    """A send by a tenant without an approved signature."""

    code = "signature_not_approved"


def _row(record: asyncpg.Record | None) -> ProposalRow | None:
    return None if record is None else msgspec.convert(dict(record.items()), ProposalRow)


def to_proposal(row: ProposalRow) -> Proposal:
    return Proposal(
        id=row.id,
        tenant=row.tenant,
        signature=f"【{row.text}】",
        status=row.status,
        proposed_by=row.proposed_by,
        awaiting=row.awaiting if row.status == "pending" else None,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
        review_note=row.review_note,
        created_at=row.created_at,
    )


def _strictly_above(path: str, below: str) -> bool:
    return below.startswith(path) and below != path


async def _author(conn: asyncpg.Connection, who: Principal | None) -> tuple[int, TenantRow, str]:
    """Who proposes (tenant id), the tenant the proposal answers to, and the actor."""
    if who is None:
        root = await tenants.ensure_root(conn)
        return root.id, root, "operator"
    return who.tenant_id, await tenant_signatures.answerable(conn, who), who.actor


async def _replace_pending(conn: asyncpg.Connection, tenant: TenantRow, answerable: str) -> None:
    """Withdraw the tenant's pending proposal for a new one answering to `answerable`, unless
    it answers to a tenant above that one (409)."""
    pending = _row(await conn.fetchrow(sql.PENDING_OF, tenant.id))
    if pending is None:
        return
    if _strictly_above(pending.answerable_path, answerable):
        raise Conflict(
            f"{tenant.code}'s signature 【{pending.text}】, proposed by {pending.proposed_by}, "
            f"awaits review by {pending.awaiting}; only {pending.proposed_by} or a tenant above "
            "can replace it",
            proposal=pending.id,
        )
    await conn.execute(sql.WITHDRAW, pending.id)


async def propose(
    conn: asyncpg.Connection, who: Principal | None, tenant: TenantRow, text: str
) -> TenantRow:
    """`text` proposed by `who` (None: the operator) as the signature of `tenant` (`who`'s own
    tenant or one below it); returns the tenant as it now stands. A proposal the operator makes
    is approved at once; the same text as the approved signature only withdraws what waits."""
    proposer, answerable, actor = await _author(conn, who)
    await _replace_pending(conn, tenant, answerable.path)
    if text == tenant.signature:
        return tenant
    approved = answerable.parent_code is None
    status = "approved" if approved else "pending"
    created = await conn.fetchval(
        sql.INSERT, tenant.id, text, status, proposer, answerable.id, actor
    )
    if created is None:
        raise Conflict(f"another signature for {tenant.code} was proposed at the same moment")
    if who is not None:  # the operator's own tools (who None) log their command themselves
        await oplog.record(
            conn,
            who,
            "signature.propose",
            tenant_id=tenant.id,
            object=f"signature:{created}",
            before={"signature": tenant.signature},
            after={"signature": text, "status": status},
        )
    if not approved:
        return tenant
    await tenant_signatures.set_approved(conn, tenant.id, text)
    fresh = await tenants.get_by_id(conn, tenant.id)
    assert fresh is not None
    return fresh


async def state(conn: asyncpg.Connection, tenant: TenantRow) -> SignatureState:
    proposals = [to_proposal(r) for r in map(_row, await conn.fetch(sql.OF_TENANT, tenant.id)) if r]
    return SignatureState(
        tenant=tenant.code,
        approved=None if tenant.signature is None else f"【{tenant.signature}】",
        pending=next((p for p in proposals if p.status == "pending"), None),
        proposals=proposals,
    )


async def _visible(conn: asyncpg.Connection, who: Principal, proposal_id: int) -> ProposalRow:
    found = _row(await conn.fetchrow(sql.IN_SUBTREE, proposal_id, who.tenant_path))
    if found is None:
        raise NotFound("signature proposal not found")
    return found


async def review(
    conn: asyncpg.Connection, who: Principal, proposal_id: int, data: Review
) -> Proposal:
    """Approve or reject a pending proposal answerable to a tenant strictly below the caller."""
    proposal = await _visible(conn, who, proposal_id)
    if proposal.status != "pending":
        raise Conflict(f"signature proposal {proposal_id} was already {proposal.status}")
    if not _strictly_above(who.tenant_path, proposal.answerable_path):
        raise Forbidden(
            f"signature proposal {proposal_id} awaits review by {proposal.awaiting} or a tenant "
            "above it: a tenant cannot decide what it (or a key it created) proposed",
            awaiting=proposal.awaiting,
        )
    status = "approved" if data.decision == "approve" else "rejected"
    decided = await conn.fetchrow(sql.REVIEW, proposal_id, status, who.tenant_id, data.note)
    if decided is None:
        raise Conflict(f"signature proposal {proposal_id} was decided meanwhile")
    await oplog.record(
        conn,
        who,
        f"signature.{data.decision}",
        tenant_id=decided["tenant_id"],
        object=f"signature:{proposal_id}",
        before={"status": proposal.status},
        after={"status": status},
        detail={"signature": proposal.text, "note": data.note},
    )
    if status == "approved":
        await tenant_signatures.set_approved(conn, decided["tenant_id"], decided["text"])
    return to_proposal(await _visible(conn, who, proposal_id))


async def pending_for(conn: asyncpg.Connection, who: Principal) -> list[Proposal]:
    """The pending proposals the caller may decide, oldest first."""
    rows = map(_row, await conn.fetch(sql.PENDING_BELOW, who.tenant_path))
    return [to_proposal(r) for r in rows if r]


async def for_sending(conn: asyncpg.Connection, tenant: TenantRow) -> str:
    """The signature `tenant` sends under: its approved one, else 409 saying what is missing."""
    if tenant.signature is not None:
        return tenant.signature
    latest = _row(await conn.fetchrow(sql.LATEST_OF, tenant.id))
    if latest is not None and latest.status == "pending":
        raise SignatureNotApproved(
            f"{tenant.code} has no approved signature: 【{latest.text}】, proposed by "
            f"{latest.proposed_by}, awaits approval by {latest.awaiting} (or a tenant above "
            "it); nothing is sent before",
            tenant=tenant.code,
            signature=f"【{latest.text}】",
            status="pending",
            proposal=latest.id,
            proposed_by=latest.proposed_by,
            awaiting=latest.awaiting,
        )
    last = f" (【{latest.text}】 was {latest.status} by {latest.reviewed_by})" if latest else ""
    raise SignatureNotApproved(
        f"{tenant.code} has no approved signature{last}: propose one "
        f"(PUT /v1/tenants/{tenant.code}/signature) for a tenant above to approve",
        tenant=tenant.code,
        signature=None if latest is None else f"【{latest.text}】",
        status="none" if latest is None else latest.status,
        proposal=None if latest is None else latest.id,
        proposed_by=None if latest is None else latest.proposed_by,
        awaiting=None,
    )


class Desk:
    """Tenancy's `SignatureDesk`: a signature given through its routes is proposed here."""

    async def propose(
        self, conn: asyncpg.Connection, who: Principal | None, tenant: TenantRow, text: str
    ) -> TenantRow:
        return await propose(conn, who, tenant, text)
