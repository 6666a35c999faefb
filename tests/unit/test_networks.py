import ipaddress

import pytest

from engine.wire.networks import NetworkPolicy, effective_address, literal_host, parse_networks

BLOCKED = [
    "0.0.0.0",
    "10.1.2.3",
    "100.64.0.1",
    "127.0.0.1",
    "127.8.9.10",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "64:ff9b::a01:203",  # NAT64 of 10.1.2.3
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2001::1",  # Teredo
]
PUBLIC = [
    "8.8.8.8",
    "93.184.215.14",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_internal_addresses_are_refused_by_default(address: str) -> None:
    refusal = NetworkPolicy().refusal(address)
    assert refusal is not None
    assert refusal.startswith(f"destination {address} is in a blocked network (")
    assert refusal.endswith("; see delivery.allow_networks")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert NetworkPolicy().refusal(address) is None


def test_refusal_names_the_range_and_the_host_name() -> None:
    refusal = NetworkPolicy().refusal("10.1.2.3", name="billing.internal")
    assert refusal == (
        "destination 10.1.2.3 (billing.internal) is in a blocked network (private 10.0.0.0/8); "
        "see delivery.allow_networks"
    )


def test_allowed_networks_open_exactly_their_range_and_its_mapped_form() -> None:
    policy = NetworkPolicy.from_cidrs(["127.0.0.0/8", "::1/128", "10.1.0.0/16"])
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "::ffff:10.1.2.3"):
        assert policy.refusal(address) is None, address
    for address in ("10.2.0.1", "169.254.169.254", "::ffff:192.168.0.1", "fe80::1"):
        assert policy.refusal(address) is not None, address


def test_effective_address_unwraps_ipv4_in_ipv6() -> None:
    v4 = ipaddress.IPv4Address("127.0.0.1")
    assert effective_address(ipaddress.ip_address("::ffff:127.0.0.1")) == v4
    assert effective_address(ipaddress.ip_address("64:ff9b::7f00:1")) == v4
    assert effective_address(ipaddress.ip_address("2002:7f00:1::")) == v4
    assert effective_address(v4) == v4


def test_parse_networks_names_the_bad_entry() -> None:
    assert parse_networks(["10.0.0.0/8", "192.0.2.7"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    for bad in ("10.0.0.1/8", "localhost", "10.0.0.0/33", ""):
        with pytest.raises(ValueError, match="is not a network in CIDR form"):
            parse_networks([bad])


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8080/x", "127.0.0.1"),
        ("http://[::1]/x", "::1"),
        ("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ("https://user:pw@10.0.0.1/", "10.0.0.1"),
        ("https://example.com/", None),
        ("http://localhost:1/", None),
        ("not a url", None),
    ],
)
def test_literal_host(url: str, host: str | None) -> None:
    assert literal_host(url) == host
