"""A stand-in engine whose every method can be made slow, failing or cancellation-proof, to drive
the server's failure paths (deadlines, 5xx mapping, concurrency limits) deterministically."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

WRITE_OK = {
    "status": "OK",
    "message": "committed",
    "rows_affected": 1,
    "rows_upserted": 1,
    "billing": {"billable_logical_bytes_written": 10},
    "performance": {"server_total_ms": 0.5},
}
QUERY_OK = {
    "rows": [{"id": 1, "$dist": 0.0}],
    "billing": {"billable_logical_bytes_queried": 0, "billable_logical_bytes_returned": 0},
    "performance": {
        "approx_namespace_size": 1,
        "cache_hit_ratio": 1.0,
        "cache_temperature": "hot",
        "exhaustive_search_count": 1,
        "query_execution_ms": 0.25,
        "server_total_ms": 0.5,
    },
}

Behaviour = Callable[..., Awaitable[Any]]


class FakeEngine:
    """Answers canned bodies; ``behave[name]`` replaces one method's behaviour."""

    def __init__(self) -> None:
        self.behave: dict[str, Behaviour] = {}
        self.calls: list[tuple[str, str | None, Any, str | None]] = []
        self.closed = False
        self.active_queries = 0
        self.max_active_queries = 0

    async def _call(self, name: str, ns: str | None, body: Any, org: str | None, default: Any) -> Any:
        self.calls.append((name, ns, body, org))
        fn = self.behave.get(name)
        if fn is not None:
            return await fn(ns=ns, body=body, org=org)
        return default

    async def write(self, namespace: str, body: Any, *, org: str, offload: bool = False) -> dict[str, Any]:
        return dict(await self._call("write", namespace, body, org, WRITE_OK))

    async def branch(
        self, namespace: str, source: str, *, at_version: int | None = None, org: str
    ) -> dict[str, Any]:
        body = {"source_namespace": source, "at_version": at_version}
        return dict(await self._call("branch", namespace, body, org, WRITE_OK))

    async def query(self, namespace: str, body: Any, *, org: str) -> dict[str, Any]:
        self.active_queries += 1
        self.max_active_queries = max(self.max_active_queries, self.active_queries)
        try:
            return dict(
                await self._call(
                    "query", namespace, body, org, {**QUERY_OK, "performance": dict(QUERY_OK["performance"])}
                )
            )
        finally:
            self.active_queries -= 1

    async def explain(self, namespace: str, body: Any, *, org: str) -> dict[str, Any]:
        return dict(await self._call("explain", namespace, body, org, {"plan_text": "scan"}))

    async def delete_namespace(self, namespace: str, *, org: str) -> dict[str, Any]:
        return dict(await self._call("delete_namespace", namespace, None, org, {"status": "OK"}))

    async def metadata(self, namespace: str, *, org: str) -> dict[str, Any]:
        return dict(await self._call("metadata", namespace, None, org, {}))

    async def update_metadata(self, namespace: str, body: Any, *, org: str) -> dict[str, Any]:
        return dict(await self._call("update_metadata", namespace, body, org, {}))

    async def get_schema(self, namespace: str, *, org: str) -> dict[str, Any]:
        return dict(await self._call("get_schema", namespace, None, org, {"id": {"type": "uint"}}))

    async def update_schema(self, namespace: str, schema: Any, *, org: str) -> dict[str, Any]:
        return dict(await self._call("update_schema", namespace, schema, org, {"id": {"type": "uint"}}))

    async def list_namespaces(
        self, *, org: str, prefix: str = "", cursor: str | None = None, page_size: int = 100
    ) -> dict[str, Any]:
        body = {"prefix": prefix, "cursor": cursor, "page_size": page_size}
        return dict(await self._call("list_namespaces", None, body, org, {"namespaces": []}))

    async def hint_cache_warm(self, namespace: str, *, org: str) -> dict[str, Any]:
        return dict(await self._call("hint_cache_warm", namespace, None, org, {"status": "ACCEPTED"}))

    async def close(self) -> None:
        self.closed = True


def sleeping(seconds: float, result: Any = None) -> Behaviour:
    async def behave(**_: Any) -> Any:
        await asyncio.sleep(seconds)
        return result

    return behave


def raising(exc: BaseException) -> Behaviour:
    async def behave(**_: Any) -> Any:
        raise exc

    return behave
