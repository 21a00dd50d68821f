"""Settings: defaults, then SENTIMENT_* variables, then flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.ops.settings import Provider, Settings, Variant


def test_flags_override_environment_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_batch_size == 32
    monkeypatch.setenv("SENTIMENT_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("SENTIMENT_PROVIDER", "cuda")
    assert Settings().max_batch_size == 8
    settings = Settings(_cli_parse_args=["--max-batch-size", "4", "--variant", "int8", "--no-reflection"])
    assert settings.max_batch_size == 4 and settings.provider is Provider.CUDA
    assert settings.variant is Variant.INT8 and settings.reflection is False


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(max_batch_size=0)
    with pytest.raises(ValidationError, match="go together"):
        Settings(tls_cert_file="cert.pem")


def test_a_queue_smaller_than_one_request_is_refused_at_start() -> None:
    with pytest.raises(
        ValidationError, match=r"--max-queue-size \(64\) must hold at least one whole request"
    ):
        Settings(max_queue_size=64, max_texts_per_request=65)
    assert Settings(max_queue_size=64, max_texts_per_request=64).max_queue_size == 64


def test_the_default_message_limit_holds_full_attention_for_the_default_models_longest_text() -> None:
    # the exporter's default recipe and the server's default limit must agree: explaining one long
    # review in full is always possible (tests may import the exporter; the server never does)
    from model_export.config import Preset, recipe
    from service.core.answer_size import response_bytes
    from service.core.results import AttentionMode

    shipped = recipe(Preset.ACCURATE)
    longest = shipped.train.max_length
    for padded in (False, True):
        size = response_bytes(
            [longest], AttentionMode.FULL, shipped.model.n_layers, shipped.model.n_heads, padded
        )
        assert size <= Settings().max_message_bytes
    # and it is not so large that a handful of long full-attention answers could exhaust a replica
    assert Settings().max_message_bytes <= 64 * 1024 * 1024
