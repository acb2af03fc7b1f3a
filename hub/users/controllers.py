"""People's accounts on the API: a tenant's users, invites, role changes. Guarded by
`users:write` (the 管理 role's scope, or a key's) like every other route: a tenant or user
outside the caller's subtree is the same 404."""

from __future__ import annotations

from litestar import Controller, get, patch, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED

from hub.users import service
from hub.users.schemas import InviteIn, NewInvite, UpdateUser, User, UserList
from tenants.auth import require
from tenants.controllers import AuthedRequest, Code, Conn
from tenants.errors import error_responses
from tenants.scopes import Scope


class UserController(Controller):
    path = "/v1"
    tags = ["users"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/tenants/{code:str}/users",
        guards=[require(Scope.USERS_WRITE)],
        responses=error_responses(404),
        summary="The people of a tenant of the caller's subtree, their roles (never passwords)",
    )
    async def list_users(self, request: AuthedRequest, conn: Conn, code: Code) -> UserList:
        return UserList(items=await service.list_users(conn, request.user, code))

    @post(
        "/tenants/{code:str}/users",
        guards=[require(Scope.USERS_WRITE)],
        responses=error_responses(404, 409, 413, 422),
        status_code=HTTP_201_CREATED,
        summary="Invite a person to a tenant of the caller's subtree; the link is shown once",
        description=(
            "Roles: 查看 (read), 发送 (send), 审核 (approve), 管理 (administer), 财务 (billing). "
            "Nobody grants a role whose scopes they do not hold (403 naming the roles). The "
            "link sets the person's password once, within `HUB_USERS__INVITE_HOURS` (48)."
        ),
    )
    async def invite(
        self, request: AuthedRequest, conn: Conn, code: Code, data: JSONBody[InviteIn]
    ) -> NewInvite:
        return await service.invite(
            conn,
            request.user,
            code,
            data,
            str(request.base_url),
            request.app.state.settings.users,
        )

    @patch(
        "/users/{login:str}",
        guards=[require(Scope.USERS_WRITE)],
        responses=error_responses(404, 413, 422),
        summary="Change a person's roles, or disable (enable) them",
    )
    async def update_user(
        self,
        request: AuthedRequest,
        conn: Conn,
        login: FromPath[str],
        data: JSONBody[UpdateUser],
    ) -> User:
        return await service.update_user(conn, request.user, login, data)
