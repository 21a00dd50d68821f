"""Entry point: `python -m service --help` lists every option."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError
from pydantic_settings import SettingsError

from service.core.errors import StartupError, quoted
from service.ops.server import Server
from service.ops.settings import LogFormat, Settings

log = logging.getLogger("service")


def describe(err: ValidationError) -> str:
    """A settings error on one line: each setting as its flag and variable, what was wrong, and the
    value given (its start, when it is long)."""
    parts = []
    for error in err.errors():
        message = error["msg"].removeprefix("Value error, ")
        field = "_".join(str(part) for part in error["loc"])
        if not field:  # a rule across settings: its message names them
            parts.append(message)
            continue
        flag = "--" + field.replace("_", "-")
        parts.append(f"{flag} (SENTIMENT_{field.upper()}): {message}; got {quoted(error['input'])}")
    return "; ".join(parts)


async def serve(settings: Settings) -> int:
    server = Server(settings)
    try:
        if settings.parent_pid:
            from service.ops.workers import follow_parent

            follow_parent(settings.parent_pid)
        await server.start()
    except Exception as err:  # one line naming the setting or file; the traceback only when debugging
        log.error("cannot start: %s", err, exc_info=log.isEnabledFor(logging.DEBUG))
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    ports = f"port={server.port} metrics_port={server.metrics_port} http_port={server.http_port}"
    print(f"READY {ports}", flush=True)
    await stopping.wait()
    log.info("signal received: draining for up to %.1f s", settings.grace_period_s)
    await server.stop()
    return 0


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(settings: Settings) -> None:
    """Standard error, as text lines or (--log-format json) one JSON object per line."""
    handler = logging.StreamHandler()
    if settings.log_format is LogFormat.JSON:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter(LOG_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["score"]:  # the bulk command: a model in this process, no server
        from service.bulk.score import main as score

        sys.exit(score(args[1:]))
    try:
        settings = Settings(_cli_parse_args=args)  # type: ignore[call-arg]
    except ValidationError as err:
        print(f"python -m service: cannot start: {describe(err)}", file=sys.stderr)
        sys.exit(2)
    except SettingsError as err:  # a flag that does not exist, or one without its value
        print(f"python -m service: cannot start: {err} (--help lists the settings)", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings)
    if settings.workers > 1:
        from service.ops.workers import run_group

        try:
            sys.exit(run_group(settings, args))
        except StartupError as err:
            log.error("cannot start: %s", err, exc_info=log.isEnabledFor(logging.DEBUG))
            sys.exit(1)
    sys.exit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
