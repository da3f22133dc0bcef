"""Notice deleted or edited managed Secrets: one lightkube watch over the Secrets that carry the
operator's label (a server-side selector, so other Secrets never reach the operator), which
wakes the owner's run. Kopf never sees Secrets, so its last-handled annotation can never
copy a token value. At start-up its first listing also hands each ApiToken not run yet its
Secret and queues its first run at the refresh that Secret plans (`core.apitoken.resume`): a
restart with 10,000 reads no Secret live before their first runs, and none runs later than its
refresh, however long the ApiToken watch takes to list the ApiTokens.
"""

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lightkube import ALL_NS
from lightkube.resources.core_v1 import Secret

from apitoken_operator.core.apitoken.resume import (
    Listed,
    catch_up,
    caught_up,
    held_back,
    listed_plan,
    spread_evenly,
)
from apitoken_operator.core.bodies import observed_secret
from apitoken_operator.crd import names
from apitoken_operator.kube.known_bodies import Body
from apitoken_operator.kube.listwatch import list_then_watch
from apitoken_operator.kube.own_writes import OwnWrites
from apitoken_operator.runtime import Runtime

log = logging.getLogger(__name__)


def owners_to_wake(
    event_type: str,
    meta: Mapping[str, Any],
    secret_owners: Mapping[tuple[str, str], str],
    written: Mapping[tuple[str, str], str],
) -> set[str]:
    """UIDs of the resources to wake for one watch event: the apitoken.dev owners named in
    the Secret's ownerReferences and the ApiToken known to write it (Orphan policy leaves no
    owner reference). The operator's own writes wake nobody, and neither does a Secret listed
    (ADDED) for an ApiToken this process has not run yet: the watch's first listing at start-up
    names every managed Secret, and those ApiTokens read theirs live on their first run anyway
    (a wake would instead run thousands at once, ahead of their spread resume times)."""
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if event_type != "DELETED" and written.get(key) == meta.get("resourceVersion"):
        return set()
    if event_type == "ADDED" and key not in secret_owners:
        return set()
    uids = {
        str(ref.get("uid"))
        for ref in meta.get("ownerReferences") or ()
        if str(ref.get("apiVersion", "")).startswith(names.GROUP + "/")
    }
    if key in secret_owners:
        uids.add(secret_owners[key])
    return uids


def wake_now(
    event_type: str,
    meta: Mapping[str, Any],
    secret_owners: Mapping[tuple[str, str], str],
    own: OwnWrites,
) -> set[str]:
    """`owners_to_wake` now, or nobody yet while this process writes that Secret: its event
    may come before the write's answer, whose end decides (`kube.own_writes`)."""
    uids = owners_to_wake(event_type, meta, secret_owners, own.last)
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if event_type != "DELETED" and own.hold(key, meta.get("resourceVersion"), uids):
        return set()
    return uids


@dataclass(frozen=True)
class Owner:
    uid: str
    namespace: str
    name: str


def listed_owner(
    event_type: str, meta: Mapping[str, Any], secret_owners: Mapping[tuple[str, str], str]
) -> Owner | None:
    """The ApiToken a Secret of the watch's listing (ADDED) belongs to, when this process has
    not run it yet: its first run may start from this body and its refresh plan."""
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if event_type != "ADDED" or key in secret_owners:
        return None
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == names.KIND_API_TOKEN and str(ref.get("apiVersion", "")).startswith(
            names.GROUP + "/"
        ):
            return Owner(str(ref.get("uid")), key[0], str(ref.get("name")))
    return None


class CatchUp:
    """The refreshes a listing finds due before its cut (its start plus the catch-up window),
    gathered while it goes on and spread up to the cut once it is through
    (`core.apitoken.resume.spread_evenly`). The cut is one time for the whole listing: one
    per listed Secret let the window's end overlap the plans after it."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._gathered: list[Listed] = []
        self._window = rt.settings.catch_up_spread
        self.cut = rt.clock() + self._window
        self.listing = True

    def _end(self, now: datetime) -> datetime:
        """Where the spread ends: the cut, or half a window from now for a listing that
        outlasted most of the window."""
        return max(self.cut, now + self._window / 2)

    def gather(self, item: Listed, now: datetime) -> datetime | None:
        """Where the refresh waits meanwhile, None when it is not due before the cut."""
        if not (self.listing and caught_up(item.plan, self.cut)):
            return None
        self._gathered.append(item)
        return held_back(item, now, self._end(now))

    def listed(self) -> None:
        """The listing is through: queue the gathered refreshes at their spread times (each
        is queued later already, and the scheduler keeps the sooner time)."""
        self.listing = False
        rt, gathered, self._gathered = self._rt, self._gathered, []
        now = rt.clock()
        for uid, at in spread_evenly(gathered, now, self._end(now)).items():
            rt.scheduler.add(uid, at)


def first_run_from_listing(
    rt: Runtime, owner: Owner, body: Body, catch: CatchUp | None = None
) -> None:
    """Hand the listed Secret to the first run of its ApiToken: that run is queued at the
    Secret's refresh plan, or if that is due soon, by the catch-up at the listing's end
    (`CatchUp`; outside a listing: soon, `core.apitoken.resume.catch_up`), and starts from
    this body (`Runtime.plan_first_run`)."""
    secret = observed_secret(body)
    if secret is None:
        return
    plan = listed_plan(secret, rt.timing.refresh_margin)
    if plan is not None:
        now = rt.clock()
        expires = secret.access_token_expires_at
        held = catch.gather(Listed(owner.uid, plan, expires), now) if catch else None
        at = held or catch_up(
            owner.uid, plan, now, expires_at=expires, window=rt.settings.catch_up_spread
        )
        rt.plan_first_run(owner.uid, at, (owner.namespace, owner.name))
    rt.secret_bodies.seed(owner.uid, body)


async def watch_managed_secrets(rt: Runtime, namespaces: Sequence[str]) -> None:
    """Run until cancelled: one watch per served namespace, or one over all of them."""
    targets: Iterable[str] = namespaces or (ALL_NS,)
    await asyncio.gather(*(_watch(rt, ns) for ns in targets))


async def _watch(rt: Runtime, namespace: str) -> None:
    delay = 1.0
    while True:
        # Changes made while no watch ran were not seen: kept Secrets are read again.
        rt.secret_bodies.invalidate_all()
        catch = CatchUp(rt)
        try:
            async for event_type, secret in list_then_watch(
                rt.kube,
                Secret,
                namespace=namespace,
                labels={names.LABEL_MANAGED_BY: names.MANAGED_BY_VALUE},
                listed=catch.listed,
            ):
                delay = 1.0
                meta = secret.metadata.to_dict() if secret.metadata is not None else {}
                owner = listed_owner(event_type, meta, rt.secret_owners)
                if owner is not None:
                    first_run_from_listing(rt, owner, secret.to_dict(), catch)
                for uid in wake_now(event_type, meta, rt.secret_owners, rt.own_writes):
                    rt.wake(uid)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the watch is restarted whatever went wrong
            log.warning("Secret watch failed (%s); restarting", type(exc).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
