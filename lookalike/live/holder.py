"""Serving one catalogue for months: follow the journal, notice new builds, swap them in without a gap.

:class:`CatalogueHolder` owns the catalogue a process serves. A background thread

- loads the first one, retrying a failed load with exponential backoff (the reason is kept for /readyz);
- follows the journal every ``follow_seconds``, so a change another process acknowledged is searchable
  here within that time (``lookalike serve --workers N``);
- watches the artifacts folder's published build (``artifacts/current.json``) every ``poll_seconds``, and
  reloads when it names another build or when told to (:meth:`CatalogueHolder.request_reload`: the admin
  endpoint, SIGHUP). The new build is loaded *beside* the old one, which keeps serving; the changes not
  folded into the new build are replayed; then, under the old catalogue's write lock (so no write falls
  between), the new one catches up with the journal and replaces the old one in one assignment. Requests
  already running finish on the old one, which is released when the last of them drops it.
  A failed reload leaves the old build serving and is retried with backoff; /v1/stats reports it.
- switches every process to a new build at one instant: the first process to load a new build announces it in
  the journal with an instant ``switch_delay_seconds`` ahead (:meth:`LiveStore.announce_build`); every other one,
  told by the journal or by its own poll, loads the same build beside the old and switches at that same instant,
  in the request path if a request comes first (an assignment, no I/O). So a client never sees an older build
  after a newer one, whichever server answers, as long as every server loaded it in time (a late one switches
  the moment it has: counted in /v1/stats as ``late_switches``) and the servers' clocks agree (NTP).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lookalike.live.catalogue import LiveCatalogue
from lookalike.live.records import JournalBusyError, PutResult

log = logging.getLogger("lookalike.live")


@dataclass
class LoadFailure:
    """The last failed load: of which build (None: unknown), why (for a person, no server paths), when to retry."""

    build_id: str | None
    reason: str
    attempts: int
    retry_at: float  # monotonic


@dataclass
class PendingSwitch:
    """A build loaded beside the served one, to be served from the agreed instant on."""

    catalogue: LiveCatalogue
    version: str  # :func:`build_version`
    at: float  # wall clock (the holder's clock): the instant every process switches
    published: str | None  # what ``published()`` named when it was loaded


def build_version(catalogue: LiveCatalogue) -> str:
    """The build a catalogue serves, as every process names it: its id and its manifest's hash (a build republished
    under the same id with another manifest is another version)."""
    manifest = json.dumps(catalogue.searcher.manifest, sort_keys=True, default=str).encode()
    return f"{catalogue.build_id}:{hashlib.sha256(manifest).hexdigest()[:16]}"


class CatalogueHolder:
    """The catalogue this process serves, kept current. ``load()`` returns a freshly loaded catalogue;
    ``published()`` names the build that should be served now (None: unknown, only reload when told)."""

    def __init__(self, load: Callable[[], LiveCatalogue], published: Callable[[], str | None] = lambda: None,
                 describe: Callable[[BaseException], str] = str, poll_seconds: float = 2.0,
                 follow_seconds: float = 0.25, backoff_seconds: tuple[float, float] = (1.0, 300.0),
                 catalogue: LiveCatalogue | None = None, switch_delay_seconds: float = 0.0,
                 clock: Callable[[], float] = time.time):
        self._load, self._published, self._describe = load, published, describe
        self.poll_seconds, self.follow_seconds = poll_seconds, follow_seconds
        self.backoff_seconds = backoff_seconds
        self.switch_delay_seconds = switch_delay_seconds
        self._clock = clock  # the wall clock every server agrees on (NTP): the instant of a build switch
        self._catalogue = catalogue
        self._pending: PendingSwitch | None = None
        self._switch_lock = threading.Lock()  # held for an assignment only: requests may take it
        self._announced: tuple[str, float] | None = None  # the journal's build switch last looked at
        self._look_now = False  # the journal announced a build this process does not serve: look at once
        self.failure: LoadFailure | None = None
        self.swaps = 0
        self.late_switches = 0
        self._seen: str | None = None  # the published build (version) last acted on
        self._served: str | None = None  # the published build (version) the served catalogue was loaded for
        self._reloads_seen: int | None = None  # the journal's reload requests already acted on
        self.started_at = time.monotonic()
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one load or swap at a time

    # ---------------------------------------------------------------- the catalogue served now

    @property
    def catalogue(self) -> LiveCatalogue | None:
        """The catalogue to answer from now: the pending build once its agreed instant has come."""
        pending = self._pending
        if pending is not None and self._clock() >= pending.at:
            self._switch(pending)
        return self._catalogue

    @catalogue.setter
    def catalogue(self, value: LiveCatalogue | None) -> None:
        self._catalogue = value

    def _switch(self, pending: PendingSwitch) -> None:
        """Serve ``pending`` (once, whichever thread comes first). No I/O here: the keeper keeps the pending build
        caught up with the journal, and a write that went to the old one meanwhile is applied by
        :meth:`_after_write`."""
        with self._switch_lock:
            if self._pending is not pending:
                return
            old, self._catalogue, self._pending = self._catalogue, pending.catalogue, None
            self._served = pending.published
            if old is not None:
                self.swaps += 1
        log.info("switched build %s -> %s at the agreed instant", old.build_id if old else None,
                 pending.catalogue.build_id)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lookalike-catalogue", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._reload.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def alive(self) -> bool:
        """Whether the thread that loads, follows and swaps is running (a dead one: the process is stuck)."""
        return self._thread is not None and self._thread.is_alive()

    def request_reload(self) -> None:
        """Look for a new build now and load it, even when the published build looks the same (SIGHUP, admin)."""
        self._reload.set()

    def request_reload_everywhere(self, here: bool = True) -> None:
        """:meth:`request_reload` in every process following the same journal (workers, replicas): recorded in the
        journal, each other one's keeper sees it within its following interval; ``here``: this one's too (False:
        the caller reloads this process itself)."""
        catalogue = self.catalogue
        if catalogue is not None and not catalogue.store.readonly:
            self._reloads_seen = catalogue.store.request_reload()
        if here:
            self.request_reload()

    def _follow_reload_requests(self, catalogue: LiveCatalogue) -> None:
        announced, requests = catalogue.store.signals()  # one read a round
        if announced is not None and announced != self._announced:
            self._announced = announced
            pending = self._pending
            if announced[0] not in (build_version(catalogue), pending.version if pending else None):
                log.info("build %s announced through the journal", announced[0])
                self._look_now = True
        if self._reloads_seen is None:
            self._reloads_seen = requests  # those made before this process started are not for it
        elif requests > self._reloads_seen:
            self._reloads_seen = requests
            log.info("reload requested through the journal")
            self._reload.set()

    async def wait_for_switch(self) -> None:
        """Wait (without blocking the event loop) until a build loaded beside the served one is served."""
        pending = self._pending
        while pending is not None and self._pending is pending:
            await asyncio.sleep(min(0.05, max(0.0, pending.at - self._clock())))
            _ = self.catalogue  # switches once the instant has come

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.catalogue is None and not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return self.catalogue is not None

    # ---------------------------------------------------------------- the loop

    def _run(self) -> None:
        last_poll = 0.0
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                forced = self._reload.is_set()
                if self.catalogue is None:
                    waiting = self._pending is not None  # loaded, waiting for the announced instant
                    if not waiting and (self.failure is None or now >= self.failure.retry_at or forced):
                        self._reload.clear()
                        self.load_now()
                elif forced or self._look_now or now - last_poll >= self.poll_seconds:
                    last_poll = now
                    self._reload.clear()
                    self._look_now = False
                    self.check_build(forced)
                pending = self._pending
                if pending is not None:
                    pending.catalogue.refresh()  # so the switch itself needs no catch-up
                catalogue = self.catalogue  # switches when the instant has come
                if catalogue is not None:
                    catalogue.refresh()
                    self._follow_reload_requests(catalogue)
            except JournalBusyError as error:  # the database is down or held: the next round tries again
                log.warning("cannot follow the journal now (searches answer from memory): %s", error)
            except Exception:  # noqa: BLE001 - never let the keeper die; the next round tries again
                log.exception("keeping the catalogue current failed; retrying")
            pending = self._pending
            wait = self.follow_seconds if pending is None else min(self.follow_seconds, pending.at - self._clock())
            self._reload.wait(max(0.0, wait))

    def load_now(self) -> bool:
        """Load the first catalogue (or retry); True when one is serving."""
        with self._lock:
            if self.catalogue is not None:
                return True
            wanted = self._seen = self._safe_published()
            try:
                loaded = self._load()
                announced = self._announced_switch(loaded)
            except Exception as error:  # noqa: BLE001 - every reason is reported and retried
                self._failed(wanted, error)
                return False
            self.failure = None
            if announced is not None and announced > self._clock():
                # the others serve the build before it until the announced instant: so does this one (not ready)
                self._pending = PendingSwitch(loaded, build_version(loaded), announced, wanted)
                log.info("build %s loaded; serving it from the announced instant, in %.1f s", loaded.build_id,
                         announced - self._clock())
                return False
            self._catalogue = loaded
            self._served = wanted
            log.info("serving build %s: %d items", loaded.build_id, len(loaded))
            return True

    @staticmethod
    def _announced_switch(loaded: LiveCatalogue) -> float | None:
        """The instant the journal announced for switching to ``loaded``'s build (None: not announced)."""
        announced = loaded.store.build_switch()
        return announced[1] if announced is not None and announced[0] == build_version(loaded) else None

    def _agree_switch(self, new: LiveCatalogue) -> float | None:
        """The instant every process switches to ``new``'s build: announced in the journal by the first process to
        load it. None (switch now) without a delay or with a read-only journal; a journal that cannot take the
        announcement raises (the switch is retried with backoff, the old build serving meanwhile)."""
        if self.switch_delay_seconds <= 0 or new.store.readonly:
            return None
        return new.store.announce_build(build_version(new), self._clock() + self.switch_delay_seconds)

    def check_build(self, forced: bool = False) -> bool:
        """Swap in the published build if it is not the one served (or ``forced``); True when a swap happened.
        ``published()`` may name a build's version (its id and its manifest's hash): a build republished under
        the same id with another manifest (a recalibrated threshold) is swapped in too. A failed load or swap
        leaves the old build serving and is retried with backoff."""
        wanted = self._safe_published()
        current = self.catalogue
        if current is None:
            return self.load_now()
        pending = self._pending
        if not forced:
            if wanted is None or wanted in (self._served, current.build_id) or (
                    pending is not None and wanted in (pending.published, pending.catalogue.build_id)):
                self._seen = wanted
                return False
            if wanted == self._seen and self.failure is None:
                return False  # loaded once since it was published, and another build resolved: wait for a change
            failure = self.failure
            if failure is not None and failure.build_id == wanted and time.monotonic() < failure.retry_at:
                return False  # this build failed to load a moment ago: wait for the backoff
        self._seen = wanted
        with self._lock:
            try:
                new = self._load()
                if new.searcher.manifest == current.searcher.manifest:
                    log.info("reload: build %s is already being served", new.build_id)
                    self._pending = None  # a newer build announced and then withdrawn: keep this one
                    self.failure = None
                    self._served = wanted
                    return False
                at = self._agree_switch(new)
            except Exception as error:  # noqa: BLE001 - the old build keeps serving; reported and retried
                self._failed(wanted, error)
                return False
            self.failure = None
            if at is not None and at > self._clock():
                self._pending = PendingSwitch(new, build_version(new), at, wanted)
                log.info("build %s loaded; every server switches to it in %.1f s", new.build_id, at - self._clock())
                return True
            if at is not None:
                self.late_switches += 1  # the others switched already: as soon as possible
                log.warning("build %s loaded after the announced instant: switching late", new.build_id)
            self._pending = None
            self.swap(new)
            self._served = wanted
            return True

    def swap(self, new: LiveCatalogue) -> None:
        """Make ``new`` the served catalogue with no acknowledged change missing from it."""
        old = self._catalogue
        if old is None:
            self._catalogue = new
            return
        with old._write_lock:  # no write on the old catalogue between the catch-up and the swap
            new.refresh()
            self._catalogue = new
        self.swaps += 1
        log.info("swapped build %s -> %s: %d items, journal at change %d", old.build_id, new.build_id, len(new),
                 new.applied_seq)

    def _safe_published(self) -> str | None:
        try:
            return self._published()
        except Exception:  # noqa: BLE001 - an unreadable pointer is "unknown", not a crash
            return None

    def _failed(self, build_id: str | None, error: BaseException) -> None:
        attempts = (self.failure.attempts + 1) if self.failure and self.failure.build_id == build_id else 1
        low, high = self.backoff_seconds
        delay = min(high, low * 2 ** (attempts - 1))
        reason = self._describe(error)
        self.failure = LoadFailure(build_id, reason, attempts, time.monotonic() + delay)
        log.error("cannot load build %s (attempt %d, next in %.0f s): %s", build_id or "?", attempts, delay, error,
                  exc_info=not isinstance(error, (OSError, ValueError, RuntimeError)))

    # ---------------------------------------------------------------- writes across a swap

    def put(self, item_id: str, image: bytes, metadata: dict, more_images: Sequence[bytes] = ()) -> PutResult:
        """:meth:`LiveCatalogue.put` on the served catalogue; a swap meanwhile still sees the change at once."""
        used = self._serving()
        result = used.put(item_id, image, metadata, more_images)
        self._after_write(used)
        return result

    def remove(self, item_id: str) -> int:
        used = self._serving()
        seq = used.remove(item_id)
        self._after_write(used)
        return seq

    def _serving(self) -> LiveCatalogue:
        catalogue = self.catalogue
        if catalogue is None:
            raise RuntimeError("no catalogue loaded yet")
        return catalogue

    def _after_write(self, used: LiveCatalogue) -> None:
        """A write that went to a catalogue swapped out meanwhile is in the journal: bring the new one up to it."""
        current = self.catalogue
        if current is not None and current is not used:
            current.refresh()
        pending = self._pending
        if pending is not None:  # the build about to be served has this server's own writes at the switch
            pending.catalogue.refresh()

    # ---------------------------------------------------------------- reporting

    def status(self) -> dict:
        """What /v1/stats and /readyz say about loading: the pending failure, swaps so far."""
        failure = self.failure
        pending = self._pending
        return {"pid": os.getpid(), "swaps": self.swaps, "late_switches": self.late_switches,
                "pending_build": None if pending is None else {
                    "build_id": pending.catalogue.build_id,
                    "switch_in_s": round(max(0.0, pending.at - self._clock()), 1)},
                # without min_seq a read may miss another process's write for at most about this long
                "follows_journal_every_s": self.follow_seconds,
                "reload_failure": None if failure is None else {
                    "build_id": failure.build_id, "reason": failure.reason, "attempts": failure.attempts,
                    "next_attempt_in_s": round(max(0.0, failure.retry_at - time.monotonic()), 1)}}
