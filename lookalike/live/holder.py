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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lookalike.live.catalogue import LiveCatalogue
from lookalike.live.records import PutResult

log = logging.getLogger("lookalike.live")


@dataclass
class LoadFailure:
    """The last failed load: of which build (None: unknown), why (for a person, no server paths), when to retry."""

    build_id: str | None
    reason: str
    attempts: int
    retry_at: float  # monotonic


class CatalogueHolder:
    """The catalogue this process serves, kept current. ``load()`` returns a freshly loaded catalogue;
    ``published()`` names the build that should be served now (None: unknown, only reload when told)."""

    def __init__(self, load: Callable[[], LiveCatalogue], published: Callable[[], str | None] = lambda: None,
                 describe: Callable[[BaseException], str] = str, poll_seconds: float = 2.0,
                 follow_seconds: float = 0.25, backoff_seconds: tuple[float, float] = (1.0, 300.0),
                 catalogue: LiveCatalogue | None = None):
        self._load, self._published, self._describe = load, published, describe
        self.poll_seconds, self.follow_seconds = poll_seconds, follow_seconds
        self.backoff_seconds = backoff_seconds
        self.catalogue = catalogue
        self.failure: LoadFailure | None = None
        self.swaps = 0
        self._seen: str | None = None  # the published build (version) last acted on
        self._served: str | None = None  # the published build (version) the served catalogue was loaded for
        self._reloads_seen: int | None = None  # the journal's reload requests already acted on
        self.started_at = time.monotonic()
        self._reload = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one load or swap at a time

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
        requests = catalogue.store.reload_requests()
        if self._reloads_seen is None:
            self._reloads_seen = requests  # those made before this process started are not for it
        elif requests > self._reloads_seen:
            self._reloads_seen = requests
            log.info("reload requested through the journal")
            self._reload.set()

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
                    if self.failure is None or now >= self.failure.retry_at or forced:
                        self._reload.clear()
                        self.load_now()
                elif forced or now - last_poll >= self.poll_seconds:
                    last_poll = now
                    self._reload.clear()
                    self.check_build(forced)
                if self.catalogue is not None:
                    self.catalogue.refresh()
                    self._follow_reload_requests(self.catalogue)
            except Exception:  # noqa: BLE001 - never let the keeper die; the next round tries again
                log.exception("keeping the catalogue current failed; retrying")
            self._reload.wait(self.follow_seconds)

    def load_now(self) -> bool:
        """Load the first catalogue (or retry); True when one is serving."""
        with self._lock:
            if self.catalogue is not None:
                return True
            wanted = self._seen = self._safe_published()
            try:
                self.catalogue = self._load()
            except Exception as error:  # noqa: BLE001 - every reason is reported and retried
                self._failed(wanted, error)
                return False
            self.failure = None
            self._served = wanted
            log.info("serving build %s: %d items", self.catalogue.build_id, len(self.catalogue))
            return True

    def check_build(self, forced: bool = False) -> bool:
        """Swap in the published build if it is not the one served (or ``forced``); True when a swap happened.
        ``published()`` may name a build's version (its id and its manifest's hash): a build republished under
        the same id with another manifest (a recalibrated threshold) is swapped in too. A failed load or swap
        leaves the old build serving and is retried with backoff."""
        wanted = self._safe_published()
        current = self.catalogue
        if current is None:
            return self.load_now()
        if not forced:
            if wanted is None or wanted in (self._served, current.build_id):
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
                    swapped = False
                else:
                    self.swap(new)
                    swapped = True
            except Exception as error:  # noqa: BLE001 - the old build keeps serving; reported and retried
                self._failed(wanted, error)
                return False
            self.failure = None
            self._served = wanted
            return swapped

    def swap(self, new: LiveCatalogue) -> None:
        """Make ``new`` the served catalogue with no acknowledged change missing from it."""
        old = self.catalogue
        if old is None:
            self.catalogue = new
            return
        with old._write_lock:  # no write on the old catalogue between the catch-up and the swap
            new.refresh()
            self.catalogue = new
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

    # ---------------------------------------------------------------- reporting

    def status(self) -> dict:
        """What /v1/stats and /readyz say about loading: the pending failure, swaps so far."""
        failure = self.failure
        return {"pid": os.getpid(), "swaps": self.swaps,
                # without min_seq a read may miss another process's write for at most about this long
                "follows_journal_every_s": self.follow_seconds,
                "reload_failure": None if failure is None else {
                    "build_id": failure.build_id, "reason": failure.reason, "attempts": failure.attempts,
                    "next_attempt_in_s": round(max(0.0, failure.retry_at - time.monotonic()), 1)}}
