"""Background ingest jobs: planned in the request, computed one at a time on a worker thread."""

import json
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Optional, Tuple

from ...errors import RsEmbedStoreError
from .encoding import jsonable
from .errors import classify

log = logging.getLogger("rsembed_store.service")

KEEP_FINISHED_JOBS = 500  # finished ingest jobs remembered for GET /jobs/{id}


class Jobs:
    """Ingest jobs run one at a time on a daemon worker thread, apart from any request.

    A job is planned (and its input checked) in the request that submits it;
    only the computation runs here, so a client that disconnects does not stop
    it. Finished jobs are kept for :data:`KEEP_FINISHED_JOBS` look-ups.
    """

    def __init__(self, store, keep: int = KEEP_FINISHED_JOBS):
        self.store = store
        self.keep = keep
        self._lock = threading.Lock()
        self._jobs: "OrderedDict[str, dict]" = OrderedDict()
        self._queue: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._worker: Optional[threading.Thread] = None

    def submit(self, plan) -> dict:
        job_id = uuid.uuid4().hex
        job = {
            "job_id": job_id,
            "status": "queued",
            "model": plan.model,
            "plan": plan.summary(),
            "progress": {"done": 0, "total": len(plan.requests)},
            "summary": None,
            "error": None,
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
        }
        with self._lock:
            self._jobs[job_id] = job
            self._forget_old()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="rsembed-ingest-jobs", daemon=True)
                self._worker.start()
        self._queue.put((job_id, plan))
        return self.get(job_id)

    def get(self, job_id: str) -> Optional[dict]:
        with self._lock:
            job = self._jobs.get(job_id)
            return json.loads(json.dumps(job)) if job is not None else None  # a snapshot

    def active(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j["status"] in ("queued", "running"))

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until no job is queued or running; False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.active():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j["status"] in ("done", "failed")]
        for k in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[k]

    def _update(self, job_id: str, **changes) -> None:
        with self._lock:
            self._jobs[job_id].update(changes)

    def _work(self) -> None:
        while True:
            job_id, plan = self._queue.get()
            try:
                self._run(job_id, plan)
            finally:
                self._queue.task_done()

    def _run(self, job_id: str, plan) -> None:
        from ...ingest.engine import Engine

        total = len(plan.requests)
        self._update(job_id, status="running", started_at=_now())

        def on_batch(summary) -> None:
            done = summary.cached + summary.computed + summary.failed
            self._update(job_id, progress={"done": min(done, total), "total": total})

        try:
            engine = Engine(self.store, self.store.config)
            with self.store.models_scope():  # the store's own weights, as its requests were keyed
                summary = engine.run(plan.requests, progress=False, on_batch=on_batch)
        except Exception as exc:
            if isinstance(exc, RsEmbedStoreError):
                _, code = classify(exc)
                error = {"code": code, "message": str(exc), "field": None}
            else:
                log.exception("ingest job %s failed", job_id)
                error = {"code": "internal_error", "message": "the ingest job failed on the server; see its log",
                         "field": None}
            self._update(job_id, status="failed", error=error, finished_at=_now())
            return
        self._update(job_id, status="done", summary=jsonable(summary.to_dict()),
                     progress={"done": total, "total": total}, finished_at=_now())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
