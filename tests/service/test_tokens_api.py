"""The management API: generate, validate, list, get, disable, delete, bulk, members."""

from __future__ import annotations

from typing import Any

import pytest

from support.tokenservice import ApiSession

from .conftest import FakeClock

pytestmark = pytest.mark.service

PROBLEM = "application/problem+json"


async def test_generate_answers_metadata_and_both_values_once(admin: ApiSession) -> None:
    created = await admin.create_token("  deploy bot  ", 30, external_ref="uid-1")

    assert created["name"] == "deploy bot"
    assert created["status"] == "active"
    assert created["owner"] == "alice" and created["workspace"] == "acme"
    assert created["externalRef"] == "uid-1"
    assert created["refreshToken"].startswith("apit_rt_")
    assert created["createdAt"].endswith("Z") and created["expiresAt"] == "2026-02-04T12:00:00Z"
    assert created["accessTokenExpiresAt"] == "2026-01-05T12:05:00Z"
    fetched = await admin.http.get(admin.path(f"/tokens/{created['id']}"), headers=admin.headers)
    assert fetched.status_code == 200
    assert set(fetched.json()) == {
        "id", "name", "workspace", "owner", "status", "createdAt", "expiresAt", "lastUsedAt",
        "externalRef",
    }  # fmt: skip
    listed = await admin.http.get(admin.path("/tokens"), headers=admin.headers)
    for value in (created["refreshToken"], created["accessToken"]):
        assert value not in fetched.text and value not in listed.text


async def test_generate_response_is_not_cached(admin: ApiSession) -> None:
    response = await admin.http.post(
        admin.path("/tokens"), json={"name": "x", "lifetimeDays": 1}, headers=admin.headers
    )
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "lifetimeDays": 0}, "lifetimeDays"),
        ({"name": "x", "lifetimeDays": 366}, "lifetimeDays"),
        ({"name": "x", "lifetimeDays": 1.5}, "lifetimeDays"),
        ({"name": "x", "lifetimeDays": "30"}, "lifetimeDays"),
        ({"name": "x", "lifetimeDays": -3}, "lifetimeDays"),
        ({"name": "x", "lifetimeDays": True}, "lifetimeDays"),
        ({"name": "x", "lifetimeDays": None}, "lifetimeDays"),
        ({"name": "x"}, "lifetimeDays"),
        ({"lifetimeDays": 30}, "name"),
        ({"name": "   ", "lifetimeDays": 30}, "name"),
        ({"name": "x" * 201, "lifetimeDays": 30}, "name"),
        ({"name": 7, "lifetimeDays": 30}, "name"),
        ({"name": "x", "lifetimeDays": 30, "externalRef": ""}, "externalRef"),
        ({"name": "x", "lifetimeDays": 30, "surprise": 1}, "surprise"),
    ],
    ids=[
        "zero-days", "366-days", "fractional-days", "string-days", "negative-days", "bool-days",
        "null-days", "missing-days", "missing-name", "blank-name", "long-name", "number-name",
        "empty-external-ref", "unknown-field",
    ],
)  # fmt: skip
async def test_bad_input_is_a_problem_naming_the_field(
    admin: ApiSession, body: dict[str, Any], field: str
) -> None:
    response = await admin.http.post(admin.path("/tokens"), json=body, headers=admin.headers)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422
    assert problem["detail"].startswith(f"{field}:")
    assert [e["field"] for e in problem["errors"]] == [field]
    listed = await admin.http.get(admin.path("/tokens"), headers=admin.headers)
    assert len(listed.json()["items"]) == 1  # only init's token: nothing was stored


async def test_lifetime_bounds_are_accepted(admin: ApiSession) -> None:
    assert (await admin.create_token("short", 1))["expiresAt"] == "2026-01-06T12:00:00Z"
    assert (await admin.create_token("long", 365))["expiresAt"] == "2027-01-05T12:00:00Z"


async def test_malformed_json_is_a_problem(admin: ApiSession) -> None:
    response = await admin.http.post(
        admin.path("/tokens"),
        content=b"{not json",
        headers={**admin.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_disable_is_irreversible_and_idempotent(admin: ApiSession) -> None:
    token = await admin.create_token()
    url = admin.path(f"/tokens/{token['id']}/disable")

    first = await admin.http.post(url, headers=admin.headers)
    again = await admin.http.post(url, headers=admin.headers)

    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == again.json()["status"] == "disabled"
    refreshed = await admin.refresh(token["refreshToken"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


async def test_delete_then_404(admin: ApiSession) -> None:
    token = await admin.create_token()
    url = admin.path(f"/tokens/{token['id']}")

    assert (await admin.http.delete(url, headers=admin.headers)).status_code == 204
    gone = await admin.http.get(url, headers=admin.headers)
    assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM
    assert (await admin.http.delete(url, headers=admin.headers)).status_code == 404
    assert (await admin.refresh(token["refreshToken"])).json()["error"] == "invalid_grant"


async def test_expired_status_and_status_filter(admin: ApiSession, clock: FakeClock) -> None:
    short = await admin.create_token("short", 1)
    long = await admin.create_token("long", 10)
    disabled = await admin.create_token("off", 10)
    await admin.http.post(admin.path(f"/tokens/{disabled['id']}/disable"), headers=admin.headers)
    clock.advance(2 * 86_400)
    await admin.renew()

    async def ids(status: str) -> set[str]:
        response = await admin.http.get(
            admin.path("/tokens"), params={"status": status}, headers=admin.headers
        )
        return {t["id"] for t in response.json()["items"]}

    assert await ids("expired") == {short["id"]}
    assert long["id"] in await ids("active") and short["id"] not in await ids("active")
    assert await ids("disabled") == {disabled["id"]}
    got = await admin.http.get(admin.path(f"/tokens/{short['id']}"), headers=admin.headers)
    assert got.json()["status"] == "expired"
    assert (await admin.refresh(short["refreshToken"])).json()["error"] == "invalid_grant"


async def test_pagination_walks_every_token_once(admin: ApiSession) -> None:
    made = {(await admin.create_token(f"t{i}"))["id"] for i in range(7)}
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        response = await admin.http.get(admin.path("/tokens"), params=params, headers=admin.headers)
        assert response.status_code == 200
        body = response.json()
        seen += [t["id"] for t in body["items"]]
        pages += 1
        if body["next"] is None:
            break
        params = {"limit": 3, "cursor": body["next"]}
    assert pages == 3
    assert len(seen) == len(set(seen)) == 8 and made <= set(seen)


async def test_default_page_limit_is_100(admin: ApiSession) -> None:
    for i in range(100):
        await admin.create_token(f"t{i}")  # 101 with init's
    response = await admin.http.get(admin.path("/tokens"), headers=admin.headers)
    assert len(response.json()["items"]) == 100 and response.json()["next"] is not None
    bad = await admin.http.get(admin.path("/tokens"), params={"limit": 0}, headers=admin.headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "limit"
    cursor = await admin.http.get(
        admin.path("/tokens"), params={"cursor": "%%%"}, headers=admin.headers
    )
    assert cursor.status_code == 422 and cursor.json()["detail"].startswith("cursor:")


async def test_external_ref_filter(admin: ApiSession) -> None:
    wanted = await admin.create_token("a", external_ref="uid-a")
    await admin.create_token("b", external_ref="uid-b")
    response = await admin.http.get(
        admin.path("/tokens"), params={"externalRef": "uid-a"}, headers=admin.headers
    )
    assert [t["id"] for t in response.json()["items"]] == [wanted["id"]]


async def test_member_sees_own_tokens_and_gets_404_for_others(
    admin: ApiSession, member: ApiSession
) -> None:
    admins = await admin.create_token("admin's")
    mine = await member.create_token("bob's")

    own = await member.http.get(member.path("/tokens"), headers=member.headers)
    assert {t["owner"] for t in own.json()["items"]} == {"bob"}
    for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/disable")]:
        response = await member.http.request(
            method, member.path(f"/tokens/{admins['id']}{suffix}"), headers=member.headers
        )
        assert response.status_code == 404, (method, suffix)
        assert response.json()["detail"] == f"no token {admins['id']!r} in this workspace"
    others = await member.http.get(
        member.path("/tokens"), params={"owner": "*"}, headers=member.headers
    )
    assert others.status_code == 403
    bulk = await member.http.post(
        member.path("/tokens/bulk"),
        json={"action": "disable", "ids": [admins["id"]]},
        headers=member.headers,
    )
    assert bulk.json()["results"] == [{"id": admins["id"], "ok": False, "result": "notFound"}]
    still = await admin.http.get(admin.path(f"/tokens/{admins['id']}"), headers=admin.headers)
    assert still.json()["status"] == "active"
    # The admin manages everyone's tokens, with owner filters.
    everyone = await admin.http.get(
        admin.path("/tokens"), params={"owner": "*"}, headers=admin.headers
    )
    assert {t["owner"] for t in everyone.json()["items"]} == {"alice", "bob"}
    bobs = await admin.http.get(
        admin.path("/tokens"), params={"owner": "bob"}, headers=admin.headers
    )
    assert mine["id"] in {t["id"] for t in bobs.json()["items"]}
    assert {t["owner"] for t in bobs.json()["items"]} == {"bob"}
    disabled = await admin.http.post(
        admin.path(f"/tokens/{mine['id']}/disable"), headers=admin.headers
    )
    assert disabled.json()["status"] == "disabled"


async def test_bulk_answers_one_result_per_id(admin: ApiSession, member: ApiSession) -> None:
    a = await admin.create_token("a")
    b = await member.create_token("b")
    response = await admin.http.post(
        admin.path("/tokens/bulk"),
        json={"action": "disable", "ids": [a["id"], b["id"], "tk_missing"]},
        headers=admin.headers,
    )
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"id": a["id"], "ok": True, "result": "disabled"},
        {"id": b["id"], "ok": True, "result": "disabled"},
        {"id": "tk_missing", "ok": False, "result": "notFound"},
    ]
    deleted = await admin.http.post(
        admin.path("/tokens/bulk"),
        json={"action": "delete", "ids": [a["id"]]},
        headers=admin.headers,
    )
    assert deleted.json()["results"] == [{"id": a["id"], "ok": True, "result": "deleted"}]
    bad = await admin.http.post(
        admin.path("/tokens/bulk"),
        json={"action": "enable", "ids": [b["id"]]},
        headers=admin.headers,
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "action"


async def test_members_are_managed_by_admins_only(admin: ApiSession, member: ApiSession) -> None:
    listed = await admin.http.get(admin.path("/members"), headers=admin.headers)
    assert [(m["user"], m["role"]) for m in listed.json()["items"]] == [
        ("alice", "admin"),
        ("bob", "member"),
    ]
    for method, suffix, body in [
        ("GET", "/members", None),
        ("POST", "/members", {"user": "carol", "role": "member"}),
        ("DELETE", "/members/alice", None),
    ]:
        response = await member.http.request(
            method, member.path(suffix), json=body, headers=member.headers
        )
        assert response.status_code == 403, (method, suffix)
    duplicate = await admin.http.post(
        admin.path("/members"), json={"user": "bob", "role": "admin"}, headers=admin.headers
    )
    assert duplicate.status_code == 409
    bad_role = await admin.http.post(
        admin.path("/members"), json={"user": "carol", "role": "owner"}, headers=admin.headers
    )
    assert bad_role.status_code == 422 and bad_role.json()["errors"][0]["field"] == "role"
    last_admin = await admin.http.delete(admin.path("/members/alice"), headers=admin.headers)
    assert last_admin.status_code == 409


async def test_removing_a_member_ends_their_credentials(
    admin: ApiSession, member: ApiSession
) -> None:
    token = await member.create_token()
    assert (
        await admin.http.delete(admin.path("/members/bob"), headers=admin.headers)
    ).status_code == 204

    assert (
        await member.http.get(member.path("/tokens"), headers=member.headers)
    ).status_code == 401
    assert (await member.refresh(token["refreshToken"])).json()["error"] == "invalid_grant"
    assert (await member.refresh(member.refresh_token)).json()["error"] == "invalid_grant"
    again = await admin.http.delete(admin.path("/members/bob"), headers=admin.headers)
    assert again.status_code == 404


async def test_new_member_credential_works(admin: ApiSession) -> None:
    carol = await admin.add_member("carol", "admin")
    listed = await carol.http.get(carol.path("/members"), headers=carol.headers)
    assert listed.status_code == 200
    refreshed = await carol.refresh(carol.refresh_token)
    assert refreshed.status_code == 200


async def test_requests_without_a_valid_bearer_are_401(admin: ApiSession) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic eDp5"}):
        response = await admin.http.get(admin.path("/tokens"), headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == PROBLEM
    refresh_as_bearer = await admin.http.get(
        admin.path("/tokens"), headers={"Authorization": f"Bearer {admin.refresh_token}"}
    )
    assert refresh_as_bearer.status_code == 401
