"""The ``doctor`` subcommand: read the config, run every check, print one line each."""

from __future__ import annotations

from pathlib import Path
import argparse
import asyncio

from ..config import Config
from .findings import Finding, Status, fail
from .probes import run_checks

EXIT_OK = 0
EXIT_PROBLEMS = 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge doctor",
        description="Check a deployment from the bridge's side: one line per check, with "
        "the fix. Exits non-zero when something is wrong.",
    )
    parser.add_argument("-c", "--config", default="config.yaml", metavar="<path>")
    parser.add_argument(
        "--server-url",
        metavar="<url>",
        help="where your server name's web site serves .well-known/matrix/client "
        "(default: https://<homeserver.domain>)",
    )
    args = parser.parse_args(argv)
    findings = asyncio.run(diagnose(Path(args.config), args.server_url))
    for finding in findings:
        print(finding.line())
    problems = sum(finding.status is Status.FAIL for finding in findings)
    print(f"\n{problems} problem(s) found." if problems else "\nNo problems found.")
    return EXIT_PROBLEMS if problems else EXIT_OK


async def diagnose(path: Path, server_url: str | None = None) -> list[Finding]:
    """Every finding for the config at ``path``; an unusable config is the only finding."""
    if not path.exists():
        return [fail("config", f"{path} does not exist", "run python -m bridge -c to create it.")]
    config = Config(str(path))
    config.load()
    problems = config.problems(need_tokens=True)
    if problems:
        return [fail("config", str(problem), "edit the config file.") for problem in problems]
    return await run_checks(config, server_url or f"https://{config['homeserver.domain']}")
