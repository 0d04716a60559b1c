"""Loopback servers and a name resolver for the outbound-URL tests.

Every server here listens on a loopback address the test picks; `ConnectionGuard` makes any
attempt to connect a socket anywhere else fail before a packet leaves, and records it, so a
test can prove that a refused address was never contacted. `FakeDNS` answers for the names a
test invents (under `.example.test`, a reserved name that never resolves for real) and passes
every other lookup to the real resolver."""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class _Server:
    """Runs a socketserver in a thread; a context manager that shuts it down."""

    server: socketserver.BaseServer

    def _start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> Any:
        self._start()
        return self

    def __exit__(self, *args: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def _server_class(base: type[socketserver.TCPServer], host: str) -> type[socketserver.TCPServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return type("LoopbackServer", (base,), {"address_family": family, "daemon_threads": True})


class Counter(_Server):
    """A TCP server that only counts the connections it accepts, and closes them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.connections = 0
        counter = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                counter.connections += 1

        cls = _server_class(socketserver.ThreadingTCPServer, host)
        self.server = cls((host, port), Handler)
        self.host, self.port = host, int(self.server.server_address[1])
        netloc = f"[{host}]" if ":" in host else host
        self.url = f"http://{netloc}:{self.port}/hook"


class HTTPReceiver(_Server):
    """An HTTP server that records each POST (headers, body) and answers `status` with
    `headers` (e.g. a redirect's Location)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = 204
        self.headers: dict[str, str] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.calls.append({"headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        cls = _server_class(ThreadingHTTPServer, host)
        self.server = cls((host, port), Handler)
        self.host, self.port = host, int(self.server.server_address[1])
        netloc = f"[{host}]" if ":" in host else host
        self.url = f"http://{netloc}:{self.port}/hook"


class ConnectionGuard:
    """Records every socket connect of this process; refuses (without connecting) any
    destination that is not a loopback address."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        real_connect: Callable[..., Any] = socket.socket.connect
        guard = self

        def connect(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                host = str(address[0]).split("%")[0]
                guard.attempts.append(host)
                if not ipaddress.ip_address(host).is_loopback:
                    raise ConnectionRefusedError(f"test guard: no connection to {host} from a test")
            return real_connect(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)

    def to(self, host: str) -> int:
        return sum(1 for attempt in self.attempts if attempt == host)


class FakeDNS:
    """Answers lookups of invented names: `names[name]` is a list of addresses, or a callable
    giving the list for each lookup (to move a record between lookups). Other names under
    `.example.test` do not resolve; every other lookup goes to the real resolver. `lookups`
    counts the lookups of each invented name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: dict[str, list[str] | Callable[[int], list[str]]] = {}
        self.lookups: dict[str, int] = {}
        real = socket.getaddrinfo
        dns = self

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = str(host).lower() if host is not None else ""
            if name in dns.names or name.endswith(".example.test"):
                count = dns.lookups[name] = dns.lookups.get(name, 0) + 1
                answer = dns.names.get(name)
                addresses = answer(count) if callable(answer) else answer
                if not addresses:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                infos = []
                for address in addresses:
                    family = socket.AF_INET6 if ":" in address else socket.AF_INET
                    sockaddr = (address, int(port or 0), 0, 0) if ":" in address else (address, int(port or 0))
                    infos.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
                return infos
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
