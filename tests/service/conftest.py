"""In-process token service on SQLite and on PostgreSQL, with a clock the tests move."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from apitoken_service.api.app import create_app
from apitoken_service.api.deps import Runtime
from apitoken_service.domain.service import TokenService
from apitoken_service.key_encryption import generate_key_file
from apitoken_service.settings import Settings
from support.tokenservice import ApiSession

BASE_URL = "http://testserver"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/service.db"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kek_file(tmp_path: Path) -> Path:
    path = tmp_path / "kek"
    generate_key_file(path)
    return path


@pytest.fixture
def settings(database_url: str, kek_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        issuer=BASE_URL,
        key_encryption_key_file=kek_file,
        access_token_ttl_seconds=300,
        rotation_grace_seconds=30,
        token_rate_limit_per_second=0,
    )


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    value: Runtime = app.state.runtime
    return value


@pytest.fixture
def service(runtime: Runtime) -> TokenService:
    return runtime.require_service()


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def bootstrap(
    http: httpx.AsyncClient, service: TokenService, clock: FakeClock, workspace: str, user: str
) -> ApiSession:
    issued = await service.bootstrap(workspace, user, 90, clock())
    return ApiSession(http, workspace, user, issued.access_token.value, issued.refresh_token)


@pytest.fixture
async def admin(http: httpx.AsyncClient, service: TokenService, clock: FakeClock) -> ApiSession:
    """`alice`, admin of workspace `acme` (as `apitoken-service init` makes her)."""
    return await bootstrap(http, service, clock, "acme", "alice")


@pytest.fixture
async def member(admin: ApiSession) -> ApiSession:
    """`bob`, a plain member of `acme`."""
    return await admin.add_member("bob")
