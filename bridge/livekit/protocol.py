"""The wire format: connection parameters in, ``SignalRequest`` frames in, ``SignalResponse``
frames out. Everything a client sends is checked here before the session acts on it."""

from __future__ import annotations

from dataclasses import dataclass
import base64
import binascii
import gzip
import io
import re
import zlib

from aiohttp import WSMessage, WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit.protocol import rtc

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest frame a client may send: SDP offers with many sections stay far below it."""
MAX_JOIN_REQUEST_BYTES = 256 * 1024
"""Largest decompressed v1 join request (it carries the first offer, typically ~20 kB)."""
PROTOCOL_VERSION = 16
MID_LINE = re.compile(r"^a=mid:(\S+)", re.MULTILINE)


class ProtocolViolation(Exception):
    """The client broke the protocol; the session closes with this message (kept short: a
    WebSocket close reason holds at most 123 bytes)."""


@dataclass(frozen=True)
class ConnectRequest:
    token: str
    auto_subscribe: bool
    single_pc: bool
    join_request: rtc.JoinRequest | None
    """v1 only: the client's join request, with its first publisher offer."""
    resume_sid: str | None = None
    """The participant sid a reconnecting client wants to continue as (livekit-client's
    resume: v0 ``reconnect=1&sid=``, v1 the join request's ``reconnect`` and
    ``participant_sid``; empty if it names none); None for a join."""


def access_token(request: web.Request) -> str | None:
    """The JWT from ``?access_token=`` (browsers) or ``Authorization: Bearer`` (Flutter)."""
    token = request.query.get("access_token")
    if token:
        return token
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def connect_request(request: web.Request, *, single_pc: bool) -> ConnectRequest:
    token = access_token(request)
    if token is None:
        raise ProtocolViolation("no access token")
    join_request = None
    if single_pc:
        join_request = decode_join_request(request.query.get("join_request", ""))
        auto_subscribe = join_request.connection_settings.auto_subscribe
        resume = join_request.reconnect
        sid = join_request.participant_sid
    else:
        auto_subscribe = request.query.get("auto_subscribe", "1") != "0"
        resume = request.query.get("reconnect") in ("1", "true")
        sid = request.query.get("sid", "")
    return ConnectRequest(token, auto_subscribe, single_pc, join_request, sid if resume else None)


def decode_join_request(text: str) -> rtc.JoinRequest:
    """A v1 ``join_request`` parameter: base64url of a (possibly gzipped) WrappedJoinRequest."""
    if not text:
        raise ProtocolViolation("no join_request")
    try:
        padded = text + "=" * (-len(text) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        wrapped = rtc.WrappedJoinRequest.FromString(raw)
        payload = wrapped.join_request
        if wrapped.compression == rtc.WrappedJoinRequest.Compression.GZIP:
            payload = _gunzip(payload)
        return rtc.JoinRequest.FromString(payload)
    except (binascii.Error, ValueError, DecodeError, OSError, EOFError, zlib.error) as e:
        raise ProtocolViolation("malformed join_request") from e


def _gunzip(data: bytes) -> bytes:
    """Decompress with a bound, so a small bomb cannot exhaust memory."""
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        payload = stream.read(MAX_JOIN_REQUEST_BYTES + 1)
    if len(payload) > MAX_JOIN_REQUEST_BYTES:
        raise ProtocolViolation("join_request too large")
    return payload


def decode_request(message: WSMessage) -> rtc.SignalRequest:
    """One client frame: binary protobuf, or protobuf JSON in a text frame."""
    try:
        if message.type == WSMsgType.BINARY:
            request = rtc.SignalRequest.FromString(message.data)
        elif message.type == WSMsgType.TEXT:
            request = json_format.Parse(message.data, rtc.SignalRequest())
        else:
            raise ProtocolViolation(f"unexpected {message.type.name} frame")
    except (DecodeError, json_format.ParseError) as e:
        raise ProtocolViolation("malformed SignalRequest") from e
    if request.WhichOneof("message") is None:
        raise ProtocolViolation("unknown or empty SignalRequest")
    return request


def check_sdp(sdp: str, kind: str) -> None:
    """Refuse descriptions aiortc would accept silently (it ignores lines it cannot parse):
    an SDP of ours and of browsers starts with v=0 and has media sections, each with a mid."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    sections = sdp.count("\nm=")
    if lines[0] != "v=0" or not sections or sdp.count("\na=mid:") < sections:
        raise ProtocolViolation(f"bad SDP {kind}: not a WebRTC session description")


def encode_response(response: rtc.SignalResponse) -> bytes:
    return response.SerializeToString()
