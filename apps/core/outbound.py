"""Outbound HTTP to addresses that users set (a team's webhook today): one validator for save
time and one sending helper for send time, so that a user cannot make the portal or its
workers call the cluster's own services (MLflow, the Kubernetes API), the cloud's metadata
service, or anything else on a loopback, private, link-local or otherwise non-public address.

The rule (`address_problem`) starts from Python's `ipaddress` properties (`is_global` as the
base, the IANA special-purpose registries, RFC 6890) and adds what those miss on the
interpreter versions Plinth supports: CGNAT 100.64.0.0/10 (RFC 6598), multicast, IPv4-mapped
IPv6 addresses (judged as the IPv4 address they carry), NAT64/6to4 prefixes that can reach
IPv4 space (RFC 6052, RFC 8215, RFC 3056) and the well-known cloud metadata addresses.
Platform admins may allow-list hosts or networks with `PLINTH_OUTBOUND_ALLOWED_HOSTS`.

Two checks, because DNS answers can change between them (DNS rebinding):

- save time: `validate_url` parses the URL, resolves its host and refuses it when any answer
  is refused, naming the address and why ("resolves to 127.0.0.1, a loopback address");
- send time: `post` resolves the host once more, checks every answer, and connects to the
  address it checked (the request keeps the URL's `Host` header, and for https the URL's host
  name for SNI and certificate checks), so no second lookup can steer the connection.
  Redirects are never followed: a 3xx answer is refused with its status and target. Proxies
  from the environment are ignored (a proxy would make the connection somewhere else).

The technique of pinning through requests' connection-pool key follows Saleor's
requests-hardened; that library is not used itself because its rule is fixed (no allow-list
of hosts, no named reasons).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, cast

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = {"http": 80, "https": 443}
# Bytes of a reply body that `post` keeps: receivers answer with a status, not a payload.
MAX_BODY = 64 * 1024

# Cloud metadata services: AWS/GCP/Azure/OpenStack (169.254.169.254), AWS ECS task metadata,
# AWS IPv6 IMDS, Alibaba, Oracle, and Azure's WireServer (a public address reachable from VMs).
METADATA = {
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
    )
}
PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT; clusters use it too
# Not (or not on every supported Python) covered by `is_global`: translation and tunnel
# prefixes that lead into IPv4 space, and ranges registered after Python's tables were written.
SPECIAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "64:ff9b::/96",  # NAT64 (RFC 6052)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "2002::/16",  # 6to4 (RFC 3056)
        "2001::/32",  # Teredo
        "2001:20::/28",  # ORCHIDv2
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment routing (RFC 9602)
    )
)


class RefusedURL(Exception):
    """Plinth will not call this URL. `reason` completes "The webhook URL …", e.g.
    "resolves to 127.0.0.1, a loopback address"."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Unresolvable(OSError):
    """The host name has no address now (or DNS did not answer). Not a refusal: at save time
    the URL is accepted (every send checks again), at send time the delivery is retried."""


@dataclass(frozen=True)
class Target:
    """A parsed outbound URL: scheme (`http`/`https`), host (no brackets, lower case) and port."""

    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class Reply:
    """What `post` returns: the status line, the headers and at most `MAX_BODY` bytes of body."""

    status: int
    reason: str
    headers: CaseInsensitiveDict[str]
    body: bytes


def address_problem(address: Address) -> str | None:
    """Why Plinth refuses to connect to `address` ("a loopback address", "a private address",
    ...), or None when it is a public address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
    judged as the IPv4 address they carry. Allow-lists are not consulted here."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        inner = address_problem(address.ipv4_mapped)
        return f"{inner} (IPv4-mapped)" if inner else None
    if address in METADATA:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address in SHARED:
        return "a shared (carrier-grade NAT) address"
    if any(address in network for network in PRIVATE):
        return "a private address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global or any(address in network for network in SPECIAL):
        return "a special-purpose address that is not publicly routable"
    return None


def _allow_list() -> tuple[set[tuple[str, int | None]], list[Network]]:
    """Parse `PLINTH_OUTBOUND_ALLOWED_HOSTS`: entries are host names or IP addresses, each
    optionally with `:port` (`[v6]:port` for IPv6), or networks in CIDR form (`10.1.0.0/16`).
    A host entry allows every address the host resolves to; a network allows the addresses in
    it, whatever name leads there. Raises ImproperlyConfigured for an entry it cannot read."""
    hosts: set[tuple[str, int | None]] = set()
    networks: list[Network] = []
    for raw in settings.PLINTH_OUTBOUND_ALLOWED_HOSTS or []:
        entry = str(raw).strip().lower()
        if not entry:
            continue
        if "/" in entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ImproperlyConfigured(f"PLINTH_OUTBOUND_ALLOWED_HOSTS: {raw!r} is not a network") from exc
            continue
        host, port = entry, ""
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest.removeprefix(":")
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        try:
            hosts.add((host.rstrip("."), int(port) if port else None))
        except ValueError as exc:
            raise ImproperlyConfigured(f"PLINTH_OUTBOUND_ALLOWED_HOSTS: {raw!r} has a bad port") from exc
    return hosts, networks


def parse(url: str) -> Target:
    """Parse an outbound URL. Only http and https, a host, no user name or password in the URL
    (credentials belong in headers or a signature). Raises RefusedURL with the reason."""
    try:
        parsed = parse_url(url.strip())
    except LocationParseError as exc:
        raise RefusedURL("is not a valid address") from exc
    scheme = (parsed.scheme or "").lower()
    if scheme not in SCHEMES:
        raise RefusedURL("must start with http:// or https://")
    if parsed.auth is not None:
        raise RefusedURL("must not contain a user name or password")
    host = (parsed.host or "").strip("[]").lower().rstrip(".")
    if not host:
        raise RefusedURL("has no host")
    return Target(scheme=scheme, host=host, port=parsed.port or SCHEMES[scheme])


def resolve(host: str, port: int) -> list[Address]:
    """The addresses of `host` (an IP literal resolves to itself), in the resolver's order,
    without repeats. Raises Unresolvable when there are none."""
    try:
        infos = socket.getaddrinfo(host, port, family=allowed_gai_family(), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host} does not resolve: {exc}") from exc
    found: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    if not found:
        raise Unresolvable(f"{host} has no IP address")
    return found


def _show(address: Address) -> str:
    """An address as people write it (Python prints ::ffff:127.0.0.1 as ::ffff:7f00:1)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def vet(host: str, port: int) -> list[Address]:
    """Resolve `host` and check every address it resolves to: all must be public, or the host
    (with or without this port) or the address's network must be allow-listed. Returns the
    addresses (connect to one of these, never to the name). Raises RefusedURL naming the
    first refused address, Unresolvable when the name has no address."""
    hosts, networks = _allow_list()
    if (host, None) in hosts or (host, port) in hosts:
        return resolve(host, port)
    addresses = resolve(host, port)
    for address in addresses:
        problem = address_problem(address)
        if problem and not any(address in network for network in networks):
            raise RefusedURL(f"resolves to {_show(address)}, {problem}")
    return addresses


def validate_url(url: str) -> str:
    """Save-time check of a URL a user sets: parse it and check what its host resolves to now.
    Returns the URL stripped of surrounding blanks. Raises RefusedURL with the reason; a host
    that does not resolve now is accepted (every send checks again and retries)."""
    target = parse(url)
    with contextlib.suppress(Unresolvable):
        vet(target.host, target.port)
    return url.strip()


class _PinnedAdapter(HTTPAdapter):
    """Connects to the address `vet` approved for the request's host, instead of letting the
    connection resolve the name again; keeps `Host`, SNI and certificate checks on the name."""

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> Any:  # requests' stubs type these as private TypedDicts without the TLS keys set here
        host_params, typed_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        pool_kwargs = cast(dict[str, Any], typed_kwargs)
        scheme = host_params["scheme"]
        host = str(host_params["host"] or "").lower().rstrip(".")
        port = host_params["port"] or SCHEMES[scheme]
        address = vet(host, port)[0]
        request.headers = CaseInsensitiveDict(request.headers or {})
        named = f"[{host}]" if ":" in host else host
        request.headers["Host"] = named if host_params["port"] is None else f"{named}:{port}"
        if scheme == "https":
            pool_kwargs["server_hostname"] = host
            pool_kwargs["assert_hostname"] = host
        host_params["host"] = str(address)
        return host_params, pool_kwargs


def post(url: str, *, data: bytes, headers: dict[str, str], timeout: float, verify: bool | str = True) -> Reply:
    """POST `data` to a URL a user set, safely: parse it, resolve its host, refuse it unless
    every address is allowed (see `vet`), connect to the checked address, never follow a
    redirect, ignore proxy settings from the environment. `timeout` is in seconds, for the
    connection and for each read. `verify` is requests': True checks https certificates
    (against the URL's host name) with the bundled CA certificates, a path names a CA bundle.
    Returns the reply (any status but 3xx). Raises RefusedURL (a refused address, or a 3xx
    answer: "answered 302 Found, a redirect to …, which is not followed"), Unresolvable, or
    requests' exceptions when the receiver cannot be reached or its certificate is wrong."""
    parse(url)
    with requests.Session() as session:
        session.trust_env = False
        adapter = _PinnedAdapter(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with session.post(
            url, data=data, headers=headers, timeout=timeout, verify=verify, allow_redirects=False, stream=True
        ) as r:
            body = r.raw.read(MAX_BODY, decode_content=True) or b""
            reply = Reply(
                status=r.status_code, reason=r.reason or "", headers=CaseInsensitiveDict(r.headers), body=body
            )
    if 300 <= reply.status < 400:
        location = reply.headers.get("Location", "")[:200] or "nowhere"
        raise RefusedURL(f"answered {reply.status} {reply.reason}, a redirect to {location}, which is not followed")
    return reply
