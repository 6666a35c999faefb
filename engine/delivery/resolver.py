"""DNS for the sender that only ever returns addresses the network policy allows.

aiohttp connects to exactly what its resolver returns, so filtering here checks the address
actually connected to: a name that resolves to an internal address, or changes its answer
between two look-ups (DNS rebinding), is refused at connect time. Literal IP hosts never reach
a resolver; the sender checks those itself (engine/delivery/sender.py)."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from engine.wire.networks import NetworkPolicy


class BlockedDestination(OSError):
    """Every address a destination resolves to is in a blocked network; str() says which."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class GuardedResolver(AbstractResolver):
    def __init__(self, inner: AbstractResolver, policy: NetworkPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        first_refusal: str | None = None
        for answer in answers:
            try:
                refusal = self._policy.refusal(answer["host"], name=host)
            except ValueError:
                refusal = f"destination {host} resolved to {answer['host']!r}, not an IP address"
            if refusal is None:
                allowed.append(answer)
            elif first_refusal is None:
                first_refusal = refusal
        if not allowed and first_refusal is not None:
            raise BlockedDestination(first_refusal)
        return allowed

    async def close(self) -> None:
        await self._inner.close()
