"""Which webhook URLs openbloo will call (DECISIONS.md §14), checked at creation and again at delivery.

A webhook makes the server issue requests to an address a tenant chose, so the URL is a request-forgery
risk. The policy is judged on the *resolved* addresses, never on the host name alone:

- the scheme is ``http`` or ``https``, with a host;
- link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254 ...) and addresses
  that are never a destination (unspecified, multicast, broadcast, reserved) are always refused;
- private and loopback addresses (10/8, 172.16/12, 192.168/16, 100.64/10, 127/8, ::1, fc00::/7 ...) are
  refused unless ``OPENBLOO_WEBHOOK_ALLOW_PRIVATE=true``.

At delivery time the host is resolved again and the request goes to the address that passed the check
(:class:`Target`), so a name that resolves to a public address at creation and to 169.254.169.254 later
(DNS rebinding) never reaches the second one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from openbloo.errors import ApiError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Always refused, whatever the settings: the instance-metadata services of the clouds, link-local ranges.
_METADATA = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
# Private networks beyond what ``ipaddress`` calls private: carrier-grade NAT space.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
MAX_URL_LENGTH = 2048


class UrlRefused(Exception):
    """The URL, or an address it resolves to, is not one openbloo will call."""


def invalid_webhook_url(reason: str) -> ApiError:
    return ApiError(400, "invalid_webhook_url", f"Webhook URL refused: {reason}")


def parse_url(url: str) -> SplitResult:
    """The URL's parts if its form is acceptable (scheme, host, length); raises :class:`UrlRefused`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"a webhook URL is 1 to {MAX_URL_LENGTH} characters")
    if any(c.isspace() for c in url):
        raise UrlRefused("the URL contains whitespace")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise UrlRefused(f"malformed URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("the scheme must be http or https")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("credentials in the URL are not allowed; authenticate with the signature")
    return parts


def classify(address: IPAddress) -> str:
    """``"public"``, ``"private"`` (incl. loopback) or ``"forbidden"`` for one address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in _METADATA if net.version == address.version) or address.is_link_local:
        return "forbidden"
    if address.is_loopback:
        return "private"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "forbidden"
    if isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"):
        return "forbidden"
    if address.is_loopback or address.is_private:
        return "private"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "private"
    return "public"


def check_address(address: IPAddress, allow_private: bool) -> None:
    kind = classify(address)
    if kind == "forbidden":
        raise UrlRefused(f"{address} is a link-local, metadata or non-routable address")
    if kind == "private" and not allow_private:
        raise UrlRefused(f"{address} is a private or loopback address (set OPENBLOO_WEBHOOK_ALLOW_PRIVATE=true)")


@dataclass(frozen=True, slots=True)
class Target:
    """Where one delivery goes: the checked address to connect to, and the names the request must carry."""

    url: str  # the URL with the checked IP in place of the host name
    host_header: str  # what the receiver expects in Host
    sni_hostname: str | None  # for https: the name to verify the certificate against
    address: str


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRefused(f"{host} does not resolve ({exc.strerror or exc})") from None
    seen: dict[str, IPAddress] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0]).split("%", 1)[0]
        seen.setdefault(ip, ipaddress.ip_address(ip))
    if not seen:
        raise UrlRefused(f"{host} does not resolve")
    return list(seen.values())


class Resolver:
    """Resolves and checks webhook hosts, with a short cache (the check is per address, so caching is safe)."""

    def __init__(self, allow_private: bool, ttl_seconds: float = 10.0) -> None:
        self.allow_private = allow_private
        self.ttl = ttl_seconds
        self._cache: dict[tuple[str, int], tuple[float, IPAddress]] = {}

    async def check_url(self, url: str) -> SplitResult:
        """Form and every resolved address must pass (creation time): one bad address refuses the URL."""
        parts = parse_url(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        for address in await resolve(parts.hostname or "", port):
            check_address(address, self.allow_private)
        return parts

    async def target(self, url: str) -> Target:
        """The address to deliver to (delivery time). Raises :class:`UrlRefused`."""
        parts = parse_url(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (host, port)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            address = hit[1]
        else:
            addresses = await resolve(host, port)
            for candidate in addresses:
                check_address(candidate, self.allow_private)
            address = addresses[0]
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (now + self.ttl, address)
        netloc_ip = f"[{address}]" if address.version == 6 else str(address)
        default_port = 443 if parts.scheme == "https" else 80
        netloc = netloc_ip if port == default_port and parts.port is None else f"{netloc_ip}:{port}"
        path = parts.path or "/"
        pinned = f"{parts.scheme}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        sni = host if parts.scheme == "https" and _literal(host) is None else None
        return Target(pinned, host_header, sni, str(address))
