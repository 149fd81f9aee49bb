"""A loopback stand-in for remote homeservers: one HTTPS server answering for many names.

Names are routed to it by an injected aiohttp resolver, and SRV records by an injected SRV
resolver, so server discovery runs over real HTTP and TLS without DNS or the Internet. The
certificate is made here and is valid for every test name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
import datetime
import ipaddress
import socket
import ssl

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import aiohttp

TEST_NAMES = ["example.test", "delegated.test", "target.test", "other.test"]
WellKnownAnswer = web.Response | dict[str, object] | Callable[[], web.Response]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the test names and 127.0.0.1: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "federation fake")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in TEST_NAMES]
    alt_names.append(x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class LoopbackResolver(AbstractResolver):
    """Resolves the test names (any port) to the fake server; everything else fails."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in TEST_NAMES:
            raise OSError(f"no such test host {host}")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self.port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


@dataclass
class FakeSrv:
    records: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        self.asked.append(name)
        return self.records.get(name, [])


@dataclass
class Request:
    path: str
    host: str
    sni: str | None


@dataclass
class FakeFederation:
    """What the fake answers, and what it was asked."""

    port: int
    session: aiohttp.ClientSession
    well_known: dict[str, WellKnownAnswer] = field(default_factory=dict)
    """What each name's .well-known answers; a callable makes a fresh response each time."""
    users: dict[str, str] = field(default_factory=dict)
    """access token -> the ``sub`` to answer."""
    userinfo_status: int = 200
    requests: list[Request] = field(default_factory=list)
    last_sni: str | None = None

    def userinfo_requests(self) -> list[Request]:
        return [r for r in self.requests if "openid/userinfo" in r.path]

    async def _well_known(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        answer = self.well_known.get(request.host.partition(":")[0])
        if answer is None:
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        if callable(answer):
            return answer()
        return answer if isinstance(answer, web.Response) else web.json_response(answer)

    async def _userinfo(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.userinfo_status != 200:
            return web.json_response({"errcode": "M_UNKNOWN"}, status=self.userinfo_status)
        sub = self.users.get(request.query.get("access_token", ""))
        if sub is None:
            return web.json_response({"errcode": "M_UNKNOWN_TOKEN"}, status=401)
        return web.json_response({"sub": sub})

    def _record(self, request: web.Request) -> None:
        self.requests.append(Request(request.path, request.host, self.last_sni))


@asynccontextmanager
async def federation_fake(tmp_path: Path) -> AsyncIterator[FakeFederation]:
    """The fake server, and a client session that reaches it for every test name."""
    cert, key = make_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    app = web.Application()
    runner = web.AppRunner(app, access_log=None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=LoopbackResolver(port), ssl=client_tls)
    )
    fake = FakeFederation(port, session)

    def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        fake.last_sni = name

    server_tls.sni_callback = remember_sni
    app.router.add_get("/.well-known/matrix/server", fake._well_known)
    app.router.add_get("/_matrix/federation/v1/openid/userinfo", fake._userinfo)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=server_tls).start()
    try:
        yield fake
    finally:
        await session.close()
        await runner.cleanup()
