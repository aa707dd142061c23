"""The inference service: HTTP API (``api``), worker loop (``worker``), batching policy
(``batching``), model registry (``models``), image checks and preprocessing (``images``),
shared metrics (``metrics``) and the ``tk submit`` client (``client``).

Nothing here is imported by ``tk --help``; only ``worker``/``models`` import torch, and the
API never does.
"""
