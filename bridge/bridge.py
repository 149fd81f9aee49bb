"""The running bridge: database, appservice and the Matrix side wired together."""

from __future__ import annotations

from collections.abc import Awaitable
import asyncio
import contextlib
import logging
import re
import secrets
import time

from mautrix.appservice import AppService
from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.errors import MatrixConnectionError, MatrixRequestError, MUnknownToken
from mautrix.types import UserID
from mautrix.util.async_db import Database

from . import db as tables
from .call_membership import CallMemberships
from .calls import CallTracker
from .config import Config
from .doctor.probe_route import add_probe_route
from .focus import Focus
from .guests import GuestRoutes, Guests
from .livekit import LiveKitSignalling
from .log_redaction import RawEventFilter
from .matrix import MatrixHandler
from .media import MediaPlane
from .media.errors import StartupError
from .media.host import WorkerPlane
from .media.local import LocalPlane
from .media.nodes import NodePlane
from .metrics import MetricsServer, count_database_errors
from .moderation import Moderation
from .permissions import PermissionLevel
from .publishing import PublishRights
from .room_state import RoomStates
from .transactions import check_transaction_shape
from .voip import DialIn

log = logging.getLogger("mau.bridge")

# How long start-up waits for the homeserver (started at the same time, say) before it gives
# up with exit code 13, so a wrong homeserver.address shows at once instead of minutes later.
HOMESERVER_WAIT_S = 30.0
HOMESERVER_RETRY_MAX_S = 5.0
PRUNE_INTERVAL_S = 3600
PROCESSED_EVENT_MAX_AGE_MS = 7 * 24 * 3600 * 1000
MAX_REQUEST_BODY = 4 * 1024 * 1024


class Bridge:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.permissions: dict[str, PermissionLevel] = config.permissions()
        self.db = Database.create(
            config["appservice.database"],
            upgrade_table=tables.build_upgrade_table(),
            db_args=dict(config["appservice.database_opts"]),
            log=logging.getLogger("mau.db"),
        )
        tables.init(self.db)
        count_database_errors(self.db)
        self.state_store = PgASStateStore(self.db)
        self.az = AppService(
            server=config["homeserver.address"],
            domain=config["homeserver.domain"],
            verify_ssl=config["homeserver.verify_ssl"],
            as_token=config["appservice.as_token"],
            hs_token=config["appservice.hs_token"],
            bot_localpart=config["appservice.bot.username"],
            id=config["appservice.id"],
            state_store=self.state_store,
            aiohttp_params={"client_max_size": MAX_REQUEST_BODY},
            ephemeral_events=True,
            log=logging.getLogger("mau.as"),
        )
        self.az.log.addFilter(RawEventFilter())
        self.az.app.middlewares.append(check_transaction_shape)
        # Acknowledge a transaction only once its events are handled, in order; a crash
        # mid-transaction makes the homeserver deliver it again.
        self.az.synchronous_handlers = True
        self.media = self._media_plane(config)
        metrics = config.metrics_settings()
        self.metrics = MetricsServer(metrics, self.media.figures) if metrics.enabled else None
        self.calls = CallTracker(self)
        self.room_states = RoomStates(self.az)
        self.focus = Focus(
            config, self.room_states, self.az.bot_mxid, self.permissions, self.media.roster
        )
        self.focus.add_proxied_routes(self.az.app)
        self.publish_rights = PublishRights(self.focus.access, self.media)
        self.signalling = LiveKitSignalling(self.focus, self.media, config.session_limits())
        if isinstance(self.media, NodePlane):
            self.media.admission_check = self.signalling.decide_for_node
            self.focus.media_url = self.media.url_for
        self.signalling.add_routes(self.focus.app)
        add_probe_route(self.focus.app, secrets.token_hex(8))
        self.moderation = Moderation(self)
        self.guests = Guests(self, config.guest_settings())
        GuestRoutes(
            self.guests,
            self.focus.addresses,
            self.guests.settings.homeserver_url,
            config["homeserver.domain"],
        ).add_to(self.focus.app, self.guests.base_url)
        self.call_memberships = CallMemberships(self.signalling)
        self.dialin = DialIn(self)
        self.matrix = MatrixHandler(self)
        self.az.matrix_event_handler(self.matrix.handle_event)
        ghost = re.escape(config.ghost_localpart("\0")).replace(re.escape("\0"), ".+")
        self._ghost_mxid = re.compile(f"@{ghost}:{re.escape(config['homeserver.domain'])}")
        self._running = contextlib.AsyncExitStack()

    @staticmethod
    def _media_plane(config: Config) -> MediaPlane:
        """Media nodes through Redis (``redis.url``), media workers (``media.workers``), or
        the media in this process."""
        redis = config.redis_settings()
        if redis is not None:
            return NodePlane(redis.url, redis.prefix)
        settings = config.media_settings()
        graces = (config["bridge.call_end_grace"], config["focus.resume_grace"])
        workers = config.media_workers()
        if workers == 0:
            return LocalPlane(settings, *graces)
        return WorkerPlane(
            workers, settings, *graces, config.drain_grace(), config.logging_config()
        )

    def is_ghost(self, user_id: UserID) -> bool:
        return self._ghost_mxid.fullmatch(user_id) is not None

    async def start(self) -> None:
        """Start every part; each one started is registered for :meth:`stop`, in reverse."""
        await self.media.start()
        self._running.push_async_callback(self.media.close)
        if self.metrics is not None:
            await self._listen("metrics", self.metrics.start())
            self._running.push_async_callback(self.metrics.stop)
        await self._start_database()
        self._running.push_async_callback(self.db.stop)
        await self.calls.start()
        self._running.push_async_callback(self.calls.stop)
        await self._listen(
            "appservice",
            self.az.start(
                host=self.config["appservice.hostname"], port=self.config["appservice.port"]
            ),
        )
        self._running.push_async_callback(self.az.stop)
        await self._wait_for_homeserver()
        await self._prepare_bot()
        try:
            await self.az.ping_self()
        except MatrixRequestError as e:
            log.error(
                "The homeserver could not reach the bridge at appservice.address (%s): %s",
                self.config["appservice.address"],
                e,
            )
        self._running.push_async_callback(self.focus.stop)
        self._running.push_async_callback(self.media.end_sessions)
        # Before the media closes every connection: a shutdown is nobody's departure.
        self._running.push_async_callback(self.focus.delegation.stop)
        self._running.callback(self.call_memberships.stop)
        await self._listen("focus", self.focus.start())
        self.media.use_tokens(self.focus.tokens)
        # Stopped first: hanging up dial-in calls needs the homeserver and the database.
        self._running.push_async_callback(self.dialin.stop)
        self.az.ready = True
        prune_task = asyncio.create_task(self._prune_history_forever())
        self._running.callback(prune_task.cancel)

    async def stop(self) -> None:
        """Stop whatever :meth:`start` got to; safe after a failed start."""
        await self._running.aclose()

    async def _start_database(self) -> None:
        try:
            await self.db.start()
            await self.state_store.upgrade_table.upgrade(self.db)
        except BaseException as e:
            with contextlib.suppress(Exception):
                await self.db.stop()  # a half-started SQLite worker thread blocks exit
            if isinstance(e, (OSError, asyncio.TimeoutError)):
                raise StartupError(
                    f"appservice.database: cannot connect to the database: {e}"
                ) from e
            raise

    async def _listen(self, section: str, start: Awaitable[None]) -> None:
        """Start one of the bridge's listeners (``<section>.hostname``/``.port``); a port that
        is taken stops the start naming its key."""
        try:
            await start
        except OSError as e:
            host, port = self.config[f"{section}.hostname"], self.config[f"{section}.port"]
            raise StartupError(
                f"{section}.port: cannot listen on {host}:{port}: {e.strerror}"
            ) from e

    async def _wait_for_homeserver(self) -> None:
        address = self.config["homeserver.address"]
        deadline = time.monotonic() + HOMESERVER_WAIT_S
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 1.0)):
                    whoami = await self.az.intent.whoami()
            except MUnknownToken as e:
                raise StartupError(
                    "appservice.as_token: the homeserver does not know this token; is the "
                    "registration file listed in its app_service_config_files?"
                ) from e
            except (MatrixConnectionError, MatrixRequestError, TimeoutError) as e:
                reason = str(e) or "no answer"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StartupError(
                        f"homeserver.address: cannot reach the homeserver at {address} "
                        f"(tried for {HOMESERVER_WAIT_S:.0f} s): {reason}"
                    ) from e
                log.warning(
                    "Homeserver not reachable at homeserver.address (attempt %d): %s",
                    attempt,
                    reason,
                )
                await asyncio.sleep(min(attempt, HOMESERVER_RETRY_MAX_S, remaining))
                continue
            if whoami.user_id != self.az.bot_mxid:
                raise StartupError(
                    f"appservice.bot.username: the homeserver says the bot is {whoami.user_id}"
                )
            return

    async def _prepare_bot(self) -> None:
        intent = self.az.intent
        await intent.ensure_registered()
        displayname = self.config["appservice.bot.displayname"]
        if displayname:
            await intent.set_displayname(displayname)
        avatar = self.config["appservice.bot.avatar"]
        if avatar:
            await intent.set_avatar_url(avatar)
        # A device lets the bot receive to-device messages (encryption keys of calls).
        await intent.create_device_msc4190(
            self.config["appservice.bot.device_id"], "Conference bridge"
        )

    async def _prune_history_forever(self) -> None:
        while True:
            try:
                await self.prune_history()
            except Exception:
                log.exception("Pruning call history failed")
            await asyncio.sleep(PRUNE_INTERVAL_S)

    async def prune_history(self) -> None:
        """Apply bridge.history_retention_days, forget old redelivery markers, expired
        removals and guest links, and guests who never got into the call."""
        now = int(time.time() * 1000)
        days = self.config["bridge.history_retention_days"]
        if days:
            await tables.Call.delete_ended_before(now - days * 24 * 3600 * 1000)
            await tables.ModerationAction.delete_before(now - days * 24 * 3600 * 1000)
        await tables.CallRemoval.delete_expired(now)
        await self.guests.prune(now)
        await tables.ProcessedEvent.delete_before(now - PROCESSED_EVENT_MAX_AGE_MS)
