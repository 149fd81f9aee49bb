"""``python -m bridge``: generate a registration, or run the bridge."""

from __future__ import annotations

from pathlib import Path
import logging
import resource
import signal
import sys

from mautrix.util.async_db import UnsupportedDatabaseVersion
from mautrix.util.program import Program

from . import resources
from .bridge import Bridge
from .config import Config, InvalidConfigError
from .media.errors import StartupError
from .registration import generate_registration
from .version import __version__

EXIT_NEW_CONFIG = 10
EXIT_BAD_CONFIG = 11
EXIT_STARTUP = 13
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ConferenceBridge(Program):
    module = "bridge"
    name = "matrix-conference-bridge"
    command = "python -m bridge"
    version = __version__
    description = "A Matrix appservice that runs calls for Matrix rooms on its own SFU."

    config: Config
    bridge: Bridge

    def prepare_arg_parser(self) -> None:
        super().prepare_arg_parser()
        self.parser.add_argument(
            "-g",
            "--generate-registration",
            action="store_true",
            help="generate the appservice registration file and store its tokens in the config",
        )
        self.parser.add_argument(
            "-r",
            "--registration",
            default="registration.yaml",
            metavar="<path>",
            help="where --generate-registration writes (default: registration.yaml)",
        )

    def prepare_config(self) -> None:
        path = Path(self.args.config)
        if not path.exists():
            path.write_text(resources.example_config(), encoding="utf-8")
            _fail(
                EXIT_NEW_CONFIG,
                f"Wrote a new config to {path}. Edit it (at least homeserver.address, "
                "homeserver.domain, appservice.address and bridge.permissions), then run "
                f"`{self.command} -g -c {path}` to generate the registration.",
            )
        self.config = Config(str(path))
        self.load_and_update_config()
        if self.args.generate_registration:
            self._validate(need_tokens=False)
            generate_registration(self.config, self.args.registration)
            print(
                f"Wrote {self.args.registration}. Add its path to app_service_config_files in "
                "the homeserver's config, restart the homeserver, then start the bridge."
            )
            sys.exit(0)

    def check_config(self) -> None:
        self._validate(need_tokens=True)

    def _validate(self, *, need_tokens: bool) -> None:
        try:
            self.config.validate(need_tokens=need_tokens)
        except InvalidConfigError as e:
            _fail(EXIT_BAD_CONFIG, f"Invalid configuration in {self.args.config}:\n{e}")

    def prepare(self) -> None:
        super().prepare()
        # mautrix would serve the `metrics` section itself (threaded, on 0.0.0.0 by default);
        # the bridge serves it on the event loop, where the SFU's counters are read safely.
        self._automatic_prometheus = False
        raise_open_file_limit()
        self.bridge = Bridge(self.config)

    async def start(self) -> None:
        try:
            await self.bridge.start()
        except StartupError as e:
            self.log.critical(str(e))
            sys.exit(EXIT_STARTUP)
        except UnsupportedDatabaseVersion as e:
            self.log.critical(
                f"appservice.database: {e}. Run a newer version of the bridge, "
                "or restore a backup made for this version."
            )
            sys.exit(EXIT_STARTUP)
        await super().start()
        # mautrix turns these signals into a KeyboardInterrupt raised in whichever task runs
        # at that moment (say, one closing a peer connection); whoever awaits that task
        # re-raises it halfway through stop(), which then leaves the database thread running
        # and the process hanging. Once running, a signal asks for a clean stop instead.
        for signum in STOP_SIGNALS:
            self.loop.add_signal_handler(signum, self._stop_on_signal)

    def _stop_on_signal(self) -> None:
        """The first signal stops cleanly; a second one acts as it would by default."""
        for signum in STOP_SIGNALS:
            self.loop.remove_signal_handler(signum)
        self.manual_stop()

    async def stop(self) -> None:
        await super().stop()
        await self.bridge.stop()

    async def system_exit(self) -> None:
        await self.bridge.stop()


def raise_open_file_limit() -> None:
    """Every call's WebSocket, UDP socket and peer connection is a file descriptor; the soft
    limit many systems start services with (1024) is reached by a few hundred participants,
    or by as many idle connections, long before the hard limit the admin allows."""
    log = logging.getLogger("mau.limits")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.debug("Open file limit: %d", soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:  # an unlimited hard limit the kernel caps lower
        log.debug("Could not raise the open file limit from %d to %d: %s", soft, hard, e)
        return
    log.debug("Raised the open file limit from %d to %d", soft, hard)


def _fail(code: int, message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def main() -> None:
    if sys.argv[1:2] == ["doctor"]:
        from .doctor.cli import main as doctor

        sys.exit(doctor(sys.argv[2:]))
    ConferenceBridge().run()


if __name__ == "__main__":
    main()
