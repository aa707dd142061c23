"""Redis clients for the queue: task entries hold raw image bytes, so replies stay bytes.

Credentials are found by ``toolkit.redis.connect`` (URL > TK_REDIS_URL > credentials file);
these helpers only switch the client to binary replies (and to asyncio for the API).
"""

from __future__ import annotations

from typing import Any

from toolkit.config import Settings


def binary_client(settings: Settings, user: str, **kwargs: Any) -> Any:
    """A sync redis-py client for ``user`` whose replies are bytes, not str."""
    import redis

    from toolkit.redis import connect

    text = connect.client(settings, user, **kwargs)
    pool = text.connection_pool
    conn_kwargs = dict(pool.connection_kwargs)
    conn_kwargs["decode_responses"] = False
    text.close()
    binary_pool = redis.ConnectionPool(connection_class=pool.connection_class, **conn_kwargs)
    return redis.Redis.from_pool(binary_pool)  # closing the client closes its pool


def async_client(
    settings: Settings,
    user: str,
    max_connections: int | None = None,
    reply_timeout: bool = True,
) -> Any:
    """An asyncio redis-py client for ``user`` (binary replies), for the HTTP API.

    ``max_connections``: a bounded pool where a command beyond the limit waits (up to the
    Redis timeout) for a free connection. redis-py's default pool instead fails at 100
    commands in flight, which one event loop reaches under a burst of uploads.

    ``reply_timeout=False``: no timeout per reply read (redis-py otherwise enters an
    ``asyncio.timeout`` for every reply: 18 for a transaction of 4 uploads, about a tenth
    of the API's CPU per upload); whoever uses such a client bounds each exchange as a
    whole (``toolkit.serve.api``'s group commit does).
    """
    import redis.asyncio as aredis

    from toolkit.redis import connect, credentials

    url = connect.resolve_url(settings, user)
    extra: dict[str, Any] = {}
    creds = credentials.load(settings.redis_conf_dir)
    if url.startswith("rediss://") and creds is not None and creds.ca_file:
        extra["ssl_ca_certs"] = creds.ca_file
        extra["ssl_check_hostname"] = False
    t = settings.redis_timeout
    if not reply_timeout:
        extra["socket_timeout"] = None
    if max_connections is None:
        return aredis.Redis.from_url(url, socket_connect_timeout=t, decode_responses=False, **extra)
    pool = aredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=t,
        socket_connect_timeout=t,
        decode_responses=False,
        **extra,
    )
    return aredis.Redis.from_pool(pool)  # closing the client closes its pool
