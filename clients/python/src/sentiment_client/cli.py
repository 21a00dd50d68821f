"""The `sentiment` command line: predict, explain, info, health, and models, load and unload. Needs the
`cli` extra."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

try:
    import typer
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
except ImportError as missing:  # pragma: no cover - depends on how the package was installed
    raise SystemExit('the command line needs its extra: pip install "sentiment-client[cli]"') from missing

from opentelemetry import context, propagate

from sentiment_client import _render
from sentiment_client._client import SentimentClient
from sentiment_client.errors import SentimentError
from sentiment_client.types import AttentionMode, Explain, Prediction, Priority

app = typer.Typer(help="Ask the sentiment service whether texts are positive or negative, and why.",
                  no_args_is_help=True, add_completion=False)  # fmt: skip
out = Console()
notes = Console(stderr=True)
# the one line that says which picture to trust (the model card's faithfulness figures)
FAITHFUL = (
    "These contributions are measured on the model: leave out the words it colours most and its answer "
    "falls furthest. The faithful explanation (model card, 'Explanations')."
)
LOOKED = (
    "Attention shows where the model looked, not why it answered so; --why shows which words moved the "
    "answer, the faithful explanation (model card, 'Explanations')."
)


class InputFormat(StrEnum):
    AUTO = "auto"
    LINES = "lines"
    CSV = "csv"
    JSONL = "jsonl"


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    TABLE = "table"


@dataclasses.dataclass
class Connection:
    target: str
    token: str | None
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    tls: bool
    timeout_s: float

    def client(self, priority: Priority = Priority.NORMAL, read_whole: bool | None = None) -> SentimentClient:
        return SentimentClient(
            self.target,
            priority=priority,
            read_whole=read_whole,
            token=self.token,
            tls=self.tls,
            root_certificates=self.ca_file,
            client_certificate=self.cert_file,
            client_key=self.key_file,
            timeout_s=self.timeout_s,
        )


@app.callback()
def connection(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Option(
            envvar="SENTIMENT_TARGET", help="Server address: HOST:PORT (gRPC) or http(s)://HOST:PORT (HTTP)."
        ),
    ] = "127.0.0.1:50051",
    token: Annotated[
        str | None, typer.Option(envvar="SENTIMENT_TOKEN", help="Bearer token, if the server needs one.")
    ] = None,
    tls: Annotated[bool, typer.Option(help="Use TLS with the system's root certificates.")] = False,
    ca_file: Annotated[Path | None, typer.Option(help="CA certificate (PEM) to trust; implies TLS.")] = None,
    cert_file: Annotated[Path | None, typer.Option(help="Client certificate (PEM) for mutual TLS.")] = None,
    key_file: Annotated[Path | None, typer.Option(help="Client private key (PEM) for mutual TLS.")] = None,
    timeout: Annotated[float, typer.Option(help="Deadline of each call, in seconds.")] = 30.0,
) -> None:
    ctx.obj = Connection(target, token, ca_file, cert_file, key_file, tls, timeout)
    join_callers_trace()


def join_callers_trace() -> None:
    """Calls join the trace of whatever ran this command, named by the TRACEPARENT (and TRACESTATE)
    environment variables as OpenTelemetry carries a context through a process's environment."""
    carrier = {key.lower(): os.environ[key] for key in ("TRACEPARENT", "TRACESTATE") if os.environ.get(key)}
    if carrier:
        context.attach(propagate.extract(carrier))


def _texts_from(path: Path, fmt: InputFormat, column: str) -> Iterator[str]:
    handle = sys.stdin if str(path) == "-" else path.open(encoding="utf-8", newline="")
    if fmt is InputFormat.AUTO:
        suffix = path.suffix.lower()
        fmt = (
            InputFormat.CSV
            if suffix == ".csv"
            else InputFormat.JSONL
            if suffix in {".jsonl", ".ndjson"}
            else InputFormat.LINES
        )
    with handle:
        if fmt is InputFormat.CSV:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                if column not in row:
                    raise typer.BadParameter(f"{path}: no column {column!r}")
                if not (row[column] or "").strip():
                    raise typer.BadParameter(f"{path}:{number}: empty {column!r}")
                yield row[column]
        elif fmt is InputFormat.JSONL:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)[column]
                    except (json.JSONDecodeError, KeyError, TypeError) as error:
                        raise typer.BadParameter(
                            f"{path}:{number}: expected a JSON object with {column!r}"
                        ) from error
        else:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\n")


def _record(prediction: Prediction) -> dict[str, object]:
    record = dataclasses.asdict(prediction)
    if prediction.attention is None:
        record.pop("attention")
    return record


def _fail(error: SentimentError) -> typer.Exit:
    notes.print(f"[red]error:[/red] {error}")
    return typer.Exit(2)


@app.command()
def predict(
    ctx: typer.Context,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify (or use --file).")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read texts from a file, or - for stdin.")
    ] = None,
    input_format: Annotated[
        InputFormat, typer.Option("--input-format", help="Format of --file.")
    ] = InputFormat.AUTO,
    column: Annotated[str, typer.Option(help="CSV column or JSONL field holding the text.")] = "text",
    output: Annotated[
        OutputFormat, typer.Option(help="jsonl (one object per line) or table.")
    ] = OutputFormat.JSONL,
    attention: Annotated[
        AttentionMode, typer.Option(help="Attention to return with each prediction.")
    ] = AttentionMode.NONE,
    priority: Annotated[
        Priority, typer.Option(help="How soon the texts want their turn on a busy server (low: a bulk job).")
    ] = Priority.NORMAL,
    read_whole: Annotated[
        bool | None,
        typer.Option(
            "--read-whole/--truncate",
            help="A text longer than the model reads at once: read whole in windows, or cut "
            "(default: as the server does).",
        ),
    ] = None,
) -> None:
    """Classify texts given as arguments, or a whole file streamed to the server."""
    if not texts and file is None:
        raise typer.BadParameter("give texts or --file")
    table = Table("label", "score", "text") if output is OutputFormat.TABLE else None
    try:
        with ctx.obj.client(priority, read_whole) as client:
            if texts:
                results: Iterator[Prediction] = iter(client.predict(list(texts), attention=attention))
            else:
                assert file is not None
                results = client.stream(_texts_from(file, input_format, column), attention=attention)
            with Progress(
                console=notes, transient=True, disable=bool(texts) or not notes.is_terminal
            ) as progress:
                task = progress.add_task("classifying", total=None)
                for prediction in results:
                    progress.advance(task)
                    if table is not None:
                        table.add_row(prediction.label, f"{prediction.score:.3f}", prediction.text)
                    else:
                        print(json.dumps(_record(prediction), ensure_ascii=False))
    except SentimentError as error:
        raise _fail(error) from error
    if table is not None:
        out.print(table)


@app.command()
def explain(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The text to explain.")],
    why: Annotated[
        bool,
        typer.Option(
            "--why",
            help="Colour each word by how far it moved the answer (measured on the model: the faithful "
            "explanation) instead of by attention (where the model looked).",
        ),
    ] = False,
    method: Annotated[
        Explain,
        typer.Option(help="With --why: shapley (the faithful one) or occlusion (each word left out)."),
    ] = Explain.SHAPLEY,
    png: Annotated[
        Path | None, typer.Option(help="Write a PNG: the coloured words and a heatmap per layer and head.")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML page.")
    ] = None,
    special_tokens: Annotated[
        bool,
        typer.Option(
            help="Show [CLS] and [SEP] too, in the terminal, PNG and HTML; by default the words alone."
        ),
    ] = False,
) -> None:
    """Show which words moved the answer (--why) or which the model attended to: coloured in the
    terminal, and attention as PNG or HTML."""
    if why and method is Explain.NONE:
        raise typer.BadParameter("--why needs a method: shapley or occlusion", param_hint="--method")
    mode = AttentionMode.FULL if png or html_file else AttentionMode.SUMMARY
    try:
        with ctx.obj.client() as client:
            prediction = client.predict(text, attention=mode, explain=method if why else Explain.NONE)
    except SentimentError as error:
        raise _fail(error) from error
    if why:
        out.print(
            f"[bold]{prediction.label}[/bold] {prediction.score:.3f}  (colour: how far each word moved the "
            f"answer, {method.value}; green towards positive, red towards negative)"
        )
        out.print(_render.contribution_text(prediction))
        out.print(f"most: {_render.strongest_words(prediction)}", soft_wrap=True)
        notes.print(FAITHFUL, soft_wrap=True)
    else:
        out.print(f"[bold]{prediction.label}[/bold] {prediction.score:.3f}  (colour: attention rollout)")
        out.print(_render.terminal_text(prediction, special_tokens))
        notes.print(LOOKED, soft_wrap=True)
    if png:
        _render.png_figure(prediction, png, special_tokens)
        notes.print(f"wrote {png}")
    if html_file:
        html_file.write_text(_render.html_page(prediction, special_tokens), encoding="utf-8")
        notes.print(f"wrote {html_file}")


@app.command()
def info(ctx: typer.Context) -> None:
    """Describe the served model as JSON."""
    try:
        with ctx.obj.client() as client:
            print(json.dumps(dataclasses.asdict(client.model_info()), indent=2))
    except SentimentError as error:
        raise _fail(error) from error


@app.command()
def models(
    ctx: typer.Context,
    ready: Annotated[bool, typer.Option(help="Only the versions loaded.")] = False,
) -> None:
    """List the versions under the server's model directory: which are loaded, which is the default,
    which are shadows, and why the others are not loaded."""
    try:
        with ctx.obj.client() as client:
            versions = client.models(ready_only=ready)
    except SentimentError as error:
        raise _fail(error) from error
    table = Table("model", "version", "state", "reason")
    for entry in versions:
        table.add_row(entry.name, str(entry.version), entry.state, entry.reason)
    out.print(table)


@app.command()
def load(
    ctx: typer.Context,
    versions: Annotated[
        list[int] | None,
        typer.Argument(help="Versions to load; by default what the server's policy chooses."),
    ] = None,
    latest: Annotated[int | None, typer.Option(help="Load the latest N versions instead.")] = None,
    shadow: Annotated[
        bool, typer.Option(help="Load the versions not yet loaded as shadows: compared, answering nothing.")
    ] = False,
    model: Annotated[str, typer.Option(help="Model name.")] = "sentiment",
) -> None:
    """Load model versions into a running server (it must run with --model-control explicit). Loading a
    shadow again without --shadow promotes it."""
    if versions and latest is not None:
        raise typer.BadParameter("give versions or --latest, not both")
    try:
        with ctx.obj.client() as client:
            client.load(versions or None, latest=latest, shadow=shadow, model=model)
            info = client.model_info()
    except SentimentError as error:
        raise _fail(error) from error
    notes.print(
        f"loaded: {list(info.loaded_versions)}, default {info.default_version}, "
        f"shadows {list(info.shadow_versions)}"
    )


@app.command()
def unload(
    ctx: typer.Context,
    version: Annotated[
        int | None, typer.Argument(help="Version to unload; every version when omitted.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model name.")] = "sentiment",
) -> None:
    """Unload a version (its calls are answered first), or every version of the model."""
    try:
        with ctx.obj.client() as client:
            client.unload(version, model=model)
    except SentimentError as error:
        raise _fail(error) from error
    notes.print(f"unloaded {'every version' if version is None else f'version {version}'}")


@app.command()
def health(
    ctx: typer.Context,
    service: Annotated[str, typer.Option(help="Service to check; the whole server by default.")] = "",
) -> None:
    """Print the health status; exit 0 only when SERVING."""
    try:
        with ctx.obj.client() as client:
            status = client.health(service)
    except SentimentError as error:
        raise _fail(error) from error
    print(status)
    if status != "SERVING":
        raise typer.Exit(1)


def main() -> None:
    app()
