"""Usage: `GET /api/usage` (jobs, GPU-seconds and queue wait by UTC day) and the daily budget."""

from __future__ import annotations

import time

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..auth import USER_ID, Identity
from ..errors import AdminRequired, InvalidQuery, QuotaExceeded
from ..models import Usage, UsageTotals
from ..settings import Settings
from ..store.usage import MAX_DAYS, seconds_to_midnight
from .context import SETTINGS, USAGE
from .errors import validation_summary
from .security import caller

routes = web.RouteTableDef()


class _UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt parameter is said, not ignored

    days: int = Field(7, ge=1, le=MAX_DAYS)
    user: str | None = Field(None, pattern=USER_ID.pattern)


def budget_of(settings: Settings, identity: Identity) -> float | None:
    """The caller's daily GPU-seconds budget: their token's, else the service's; None: none."""
    own = identity.gpu_seconds_per_day
    return (own if own is not None else settings.gpu_seconds_per_day) or None


async def check_budget(request: web.Request, identity: Identity) -> None:
    """Refuse a submission by a user whose jobs have used their day's GPU-seconds budget."""
    budget = budget_of(request.app[SETTINGS], identity)
    if budget is None:
        return
    at = time.time()
    used = await request.app[USAGE].gpu_seconds_today(identity.user, at)
    if used < budget:
        return
    error = QuotaExceeded(
        f"your jobs used {used:.1f} of your {budget:g} GPU-seconds for today (UTC); "
        "the budget resets at 00:00 UTC",
        retry_after=seconds_to_midnight(at),
    )
    error.details.update(gpu_seconds_per_day=budget, gpu_seconds_used=round(used, 3))
    raise error


@routes.get("/api/usage")
async def get_usage(request: web.Request) -> web.Response:
    """The caller's totals by UTC day, today first (`?days=`, 1–31, default 7); admins see
    every user's and per backend, or one user's with `?user=`."""
    identity = caller(request)
    try:
        query = _UsageQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise InvalidQuery(validation_summary(exc)) from None
    user = query.user
    if user is not None and user != identity.user and not identity.admin:
        raise AdminRequired("only admins see other users' usage")
    if user is None and not identity.admin:
        user = identity.user
    days = await request.app[USAGE].report(user=user, days=query.days, backends=identity.admin)
    total = UsageTotals()
    for day in days:
        total.add(UsageTotals.model_validate(day.model_dump(include=set(UsageTotals.model_fields))))
    report = Usage(
        user=user,
        gpu_seconds_per_day=budget_of(request.app[SETTINGS], identity),
        days=days,
        total=total,
    )
    return web.Response(text=report.model_dump_json(), content_type="application/json")
