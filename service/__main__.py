"""Entry point: `python -m service --help` lists every option."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from service.config import Settings
from service.errors import ModelDirectoryError
from service.server import Server

log = logging.getLogger("service")


async def serve(settings: Settings) -> int:
    server = Server(settings)
    try:
        await server.start()
    except ModelDirectoryError as err:
        log.error("cannot start: %s", err)
        return 1
    except OSError as err:
        log.error("cannot start: %s", err)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(f"READY port={server.port} metrics_port={server.metrics_port}", flush=True)
    await stopping.wait()
    log.info("signal received: draining for up to %.1f s", settings.grace_period_s)
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = Settings(_cli_parse_args=args)  # type: ignore[call-arg]
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if settings.workers > 1:
        from service.workers import run_group

        sys.exit(run_group(settings, args))
    sys.exit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
