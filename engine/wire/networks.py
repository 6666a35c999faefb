"""Which addresses the daemon may connect to: internal networks are refused unless the operator
opens them with `delivery.allow_networks`. Pure: no I/O, no DNS; the sender applies it to the
addresses a name actually resolved to, at connect time."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HINT = "see delivery.allow_networks"

# A webhook URL is chosen by whoever may insert into `webhooks`; without this list it could reach
# the cloud metadata service, the database host or any service beside the daemon.
_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"),
    # Teredo (2001::/32) and other protocol assignments: tunnels to addresses we cannot see.
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
BLOCKED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), kind) for cidr, kind in _BLOCKED
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings ("10.0.0.0/8", "::1/128", or one address) as networks; ValueError names the
    entry that is not one."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a network in CIDR form ({exc})") from None
    return tuple(networks)


def effective_address(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form really reaches (::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d,
    6to4 2002:a.b.c.d::), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


@dataclass(frozen=True, kw_only=True)
class NetworkPolicy:
    """Blocked: the internal ranges above. Allowed (wins over blocked): `allowed`."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_cidrs(cls, cidrs: Sequence[str]) -> NetworkPolicy:
        return cls(allowed=parse_networks(cidrs))

    def blocked_by(self, address: str | IPAddress) -> tuple[IPNetwork, str] | None:
        """The blocked network (and its kind) `address` is in, None when it may be connected to.
        Raises ValueError when `address` is not an IP address."""
        if isinstance(address, str):
            address = address.split("%", 1)[0]  # an IPv6 zone names an interface, not a host
        ip = ipaddress.ip_address(address)
        candidates = {ip, effective_address(ip)}
        if any(candidate in net for candidate in candidates for net in self.allowed):
            return None
        for candidate in candidates:
            for net, kind in BLOCKED_NETWORKS:
                if candidate in net:
                    return net, kind
        return None

    def refusal(self, address: str | IPAddress, *, name: str | None = None) -> str | None:
        """Why connecting to `address` (resolved from `name`) is refused, or None."""
        blocked = self.blocked_by(address)
        if blocked is None:
            return None
        net, kind = blocked
        where = f"{address} ({name})" if name and name != str(address) else str(address)
        return f"destination {where} is in a blocked network ({kind} {net}); {HINT}"


def literal_host(url: str) -> str | None:
    """The URL's host, as written, when it is a literal IP address (no DNS involved), else None."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    return host
