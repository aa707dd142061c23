"""Every Redis key prefix, stream and group name, TTL and limit the queue uses, in one place."""

from __future__ import annotations

KEY_PREFIX = "tk:"
"""All of tk's keys start with this; the ACL users' key permissions are written against it."""

KEY_PATTERN = KEY_PREFIX + "*"

# --- names ---------------------------------------------------------------------------------
TASK_STREAM = KEY_PREFIX + "tasks"
"""The stream of tasks not yet done. Entries are deleted once their result is stored, so the
stream is never trimmed and its length is waiting + pending."""

GROUP = "tk-workers"
"""The one consumer group every worker reads through."""

DEAD_STREAM = KEY_PREFIX + "tasks:dead"
"""Dead-letter stream: tasks delivered ``max_deliveries`` times without being acked."""

DONE_STREAM = KEY_PREFIX + "tasks:done"
"""Notifications the API's long-polls wait on: one entry per completed batch with its task
ids and their results (so a woken request needs no GET); trimmed."""

IMAGE_PREFIX = KEY_PREFIX + "image:"
"""``tk:image:<task id>``: a waiting task's image, a hash of its pieces ``0``, ``1``, ... in
order (cut to fill jemalloc's small size classes: toolkit/queue/pieces.py). Written with the
task's entry, deleted with it."""

RESULT_PREFIX = KEY_PREFIX + "result:"
"""``tk:result:<task id>``: the task's status and, once done, its result (JSON)."""

HEARTBEAT_PREFIX = KEY_PREFIX + "worker:"
"""``tk:worker:<consumer>``: a live worker's heartbeat (JSON), expires with HEARTBEAT_TTL."""

METRICS_KEY = KEY_PREFIX + "metrics"
"""A hash of counters and histogram buckets the workers add to and the API exports."""
METRICS_FLUSH_S = 1.0
"""A worker with its next batch already in hand writes its metrics with a batch's results
at most this often (13-odd HINCRBYs per batch were as many commands as the rest of the
transaction); one about to go idle writes them with every batch."""

# --- TTLs and timing -----------------------------------------------------------------------
RESULT_TTL_S = 3600
"""How long a finished task's result is kept (seconds)."""

PENDING_TTL_S = 86400
"""How long a task's 'pending' marker lives; a task waiting longer than this reads as unknown."""

VISIBILITY_TIMEOUT_MS = 30_000
"""A claimed entry idle this long is taken over by another worker (XAUTOCLAIM)."""

MAX_DELIVERIES = 3
"""Deliveries after which a task goes to the dead-letter stream instead of being retried."""

HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TTL_S = 10
"""A worker refreshes its heartbeat every interval; a missing key means the worker is gone."""

DONE_STREAM_MAXLEN = 1_000
"""Approximate length the notification stream is trimmed to (entries carry results, a few
hundred bytes each: about 4 MB at max_batch 8). An API reader that falls further behind
misses wake-ups and finds those results by re-reading each second instead."""

DEAD_STREAM_MAXLEN = 100_000
"""The dead-letter stream is trimmed (approximately) past this many entries."""

# --- limits ---------------------------------------------------------------------------------
MAX_QUEUE_DEPTH = 1000
"""Waiting tasks above which the API answers 503 and enqueues nothing."""

MAX_BATCH = 8
"""Tasks a worker claims (and completes) together at most; on a CPU its forward passes are
sized apart (``serve.forward_batch``: 2-3 images measure cheapest). 8 rather than 4: half
the claims, completes and wake-ups per image; alternated in one stack beside the ceiling,
0.937 vs 0.907 of it, 5 rounds of 6 (16: 0.933, the same, with more tasks held per worker)."""

MAX_DELAY_MS = 5
"""How long a worker waits to fill a batch once it holds one task."""

MAX_IMAGE_BYTES = 8 * 1024 * 1024
"""Largest image accepted (bytes of the encoded file)."""

MAX_IMAGE_PIXELS = 40_000_000
"""Largest image accepted (width x height); stops decompression bombs."""

MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024
"""Largest request body (a base64 image in JSON plus room for the rest)."""

MAX_WAIT_S = 60.0
"""Longest an API request is held for a result (GET /result?wait=, POST /predict?wait=)."""

API_REDIS_CONNECTIONS = 64
"""Redis connections one API process opens at most; more commands in flight wait their turn
(long-polls hold none: one shared reader serves them all)."""

ENQUEUE_GROUP_MAX = 16
"""Uploads the API queues in one transaction at most: the ones that arrive while the
previous transaction is in flight go together (toolkit/serve/groupcommit.py)."""

TOP_K = 5
"""Labels returned per image by default."""

MAX_TOP_K = 20

CLAIM_BLOCK_MS = 1000
"""How long one blocking read waits when the queue is empty (also how quickly SIGTERM acts)."""
