"""The SSRF guard of every URL outboxd fetches on someone else's word: the SNS SubscribeURL
and the application's webhook endpoints.

A URL must be printable ASCII with no user part, no fragment and an https scheme. For
arbitrary hosts (webhooks) the addresses are checked too, before any connect: an IP literal
at once, a name after it is resolved (by :class:`GuardedResolver`, which is what the HTTP
client connects to, so a name that resolves to a public address for the check and a
private one for the connect cannot slip through). Only public unicast addresses are
allowed, unless the host (or one of its addresses) is listed as allowed: hosts or CIDR
networks, which may also use plain http.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_PRINTABLE = re.compile(r"[\x21-\x7e]{1,2048}", re.ASCII)


class UrlRefused(ValueError):
    """The URL may not be fetched; the message says why (safe to show to an operator)."""


class AddressRefused(OSError):
    """A name resolved to no address that may be reached (raised before any connect)."""


def split_url(url: object, *, schemes: Iterable[str] = ("https",)) -> SplitResult:
    """``url`` split, if it is printable ASCII, of one of ``schemes``, with a host and no
    user part or fragment; else :class:`UrlRefused`."""
    if not isinstance(url, str) or not _PRINTABLE.fullmatch(url):
        raise UrlRefused("the URL is malformed")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise UrlRefused("the URL is malformed") from exc
    if parts.scheme not in tuple(schemes):
        raise UrlRefused(f"the URL must use {' or '.join(schemes)}")
    if not parts.hostname or "@" in parts.netloc or parts.fragment:
        raise UrlRefused("the URL must name a host, without a user or a fragment")
    return parts


def public_address(address: IpAddress) -> bool:
    """Whether ``address`` is a public unicast address (not private, loopback, link-local,
    multicast, reserved, shared or documentation space; IPv4 inside IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return public_address(mapped)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Hosts and networks exempt from the public-address rule (and allowed plain http)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> Allowlist:
        """From ``host`` and ``CIDR`` entries; ValueError names a bad one."""
        hosts: set[str] = set()
        networks: list[IpNetwork] = []
        for entry in (e.strip().lower() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", entry):
                    raise ValueError(f"{entry!r} is neither a host name nor a network") from None
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    def host_listed(self, host: str) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        literal = _ip_literal(host)
        return literal is not None and self.address_listed(literal)

    def address_listed(self, address: IpAddress) -> bool:
        return any(address in network for network in self.networks)

    def allows(self, host: str, address: IpAddress) -> bool:
        """Whether a connect to ``address`` (found for ``host``) is allowed."""
        return public_address(address) or self.host_listed(host) or self.address_listed(address)


def _ip_literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def check_url(url: object, allow: Allowlist) -> SplitResult:
    """``url`` split if it may be fetched as far as can be told without resolving it: https
    (or http for an allowed host) and, for an IP literal, an allowed address. Names are
    checked again when resolved (:class:`GuardedResolver`)."""
    parts = split_url(url, schemes=("https", "http"))
    host = parts.hostname or ""
    listed = allow.host_listed(host)
    if parts.scheme == "http" and not listed:
        raise UrlRefused("the URL must use https (plain http only for allowed private hosts)")
    literal = _ip_literal(host)
    if literal is not None and not allow.allows(host, literal):
        raise UrlRefused(f"{literal} is not a public address")
    return parts


class GuardedResolver(AbstractResolver):
    """Resolves names like aiohttp's default resolver, then drops every address that
    :meth:`Allowlist.allows` refuses; a name left with none fails before any connect."""

    def __init__(self, allow: Allowlist, inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        kept = [r for r in found if self._allowed(host, r)]
        if not kept:
            raise AddressRefused(f"{host} resolves to no public address")
        return kept

    def _allowed(self, host: str, result: ResolveResult | dict[str, Any]) -> bool:
        literal = _ip_literal(str(result["host"]))
        return literal is not None and self.allow.allows(host, literal)

    async def close(self) -> None:
        await self.inner.close()
