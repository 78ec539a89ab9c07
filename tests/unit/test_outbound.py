"""The SSRF guard of outbound URLs (webhooks, SubscribeURL) and the webhook signature."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from daemon.feedback.outbound import (
    Allowlist,
    GuardedResolver,
    UrlRefused,
    check_url,
    public_address,
)
from daemon.hooks import signing

NOBODY = Allowlist()


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://[fd00::1]/hook",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "http://93.184.215.14/hook",  # public, but plain http
        "http://hooks.example.com/hook",
        "ftp://hooks.example.com/hook",
        "https://user:pw@hooks.example.com/hook",
        "https://hooks.example.com/hook#frag",
        "https://hooks.example.com:99999/hook",
        "https://hooks.example.com/h\u00e9",
        "https:///nohost",
    ],
)
def test_refused_without_resolving(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url(url, NOBODY)


def test_public_https_is_allowed_as_far_as_the_url_tells() -> None:
    assert check_url("https://93.184.215.14/hook", NOBODY).hostname == "93.184.215.14"
    assert check_url("https://hooks.example.com:8443/h?x=1", NOBODY).port == 8443


def test_allowlisted_hosts_and_networks_may_be_private_and_http() -> None:
    allow = Allowlist.parse(["127.0.0.1", "10.1.0.0/16", "receiver.internal"])
    check_url("http://127.0.0.1:8080/h", allow)
    check_url("http://10.1.2.3/h", allow)
    check_url("http://receiver.internal/h", allow)
    with pytest.raises(UrlRefused):
        check_url("http://10.2.0.1/h", allow)


def test_allowlist_entries_are_checked() -> None:
    with pytest.raises(ValueError, match="neither a host name nor a network"):
        Allowlist.parse(["http://x"])


def test_ipv4_inside_ipv6_is_judged_as_ipv4() -> None:
    assert not public_address(ipaddress.ip_address("::ffff:192.168.1.1"))
    assert not public_address(ipaddress.ip_address("2002:c0a8:0101::1"))  # 6to4 of 192.168.1.1
    assert public_address(ipaddress.ip_address("2606:4700::1111"))


class _Dns(AbstractResolver):
    """Answers every name with the given addresses (what a hostile DNS could say)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_a_name_resolving_to_private_addresses_is_refused_before_connect() -> None:
    resolver = GuardedResolver(NOBODY, _Dns("10.0.0.1", "169.254.169.254"))
    with pytest.raises(OSError, match="no public address"):
        await resolver.resolve("hooks.example.com", 443)


async def test_only_the_public_addresses_of_a_name_are_kept() -> None:
    resolver = GuardedResolver(NOBODY, _Dns("10.0.0.1", "93.184.215.14"))
    found = await resolver.resolve("hooks.example.com", 443)
    assert [r["host"] for r in found] == ["93.184.215.14"]


async def test_an_allowlisted_name_may_resolve_to_a_private_address() -> None:
    resolver = GuardedResolver(Allowlist.parse(["receiver.internal"]), _Dns("10.0.0.1"))
    assert [r["host"] for r in await resolver.resolve("receiver.internal", 80)] == ["10.0.0.1"]


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"id":"e1"}'
    header = signing.sign("s" * 20, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert signing.verify("s" * 20, body, header, now=1_700_000_100)
    assert not signing.verify("s" * 20, body, header, now=1_700_001_000)  # too old
    assert not signing.verify("t" * 20, body, header, now=1_700_000_100)
    assert not signing.verify("s" * 20, body + b" ", header, now=1_700_000_100)
    assert not signing.verify("s" * 20, body, "v1=abc", now=1_700_000_100)
    assert not signing.verify("s" * 20, body, "t=x,v1=abc", now=1_700_000_100)
    rotated = header + ",v1=" + "0" * 64
    assert signing.verify("s" * 20, body, rotated, now=1_700_000_100)
