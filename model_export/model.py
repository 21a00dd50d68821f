"""The Transformer encoder classifier, attention written out (Vaswani et al. 2017, section 3)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model_export.config import ModelConfig, Pooling, Positional

# Added to the score of a padded key before the softmax: exp() of it underflows to exactly 0.
MASK_VALUE = -1e9


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor,
    dropout: nn.Module | None = None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention: softmax(QK^T / sqrt(d_k) + bias + mask) V.

    q, k, v: (B, heads, T, d_k); mask: (B, 1, 1, T) with 1 for real keys, 0 for padding;
    bias: None or (1, heads, T, T), added to the scores (relative positions).
    Returns the output (B, heads, T, d_k) and the weights (B, heads, T, T).
    """
    d_k = q.size(-1)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d_k)  # (B, heads, T, T)
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(mask == 0, MASK_VALUE)
    weights = scores.softmax(dim=-1)
    attended = dropout(weights) if dropout is not None else weights
    return torch.matmul(attended, v), weights


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(same)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )  # (d_model / 2,)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


def relative_buckets(length: int, buckets: int, max_distance: int, device: torch.device) -> Tensor:
    """Bucket of each (query, key) distance, (T, T) int64, as T5 and MPNet bucket them: half the
    buckets for keys before the query, half for keys after; within a half, distances below a
    quarter of the buckets get one bucket each, longer ones share buckets spaced by log distance up
    to max_distance, and everything further shares the last."""
    position = torch.arange(length, device=device)
    distance = position[:, None] - position[None, :]  # query - key: > 0 for keys before the query
    half = buckets // 2
    exact = half // 2
    side = (distance < 0).long() * half
    far = distance.abs()
    logarithmic = (
        exact
        + (
            torch.log(far.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
        ).long()
    )
    logarithmic = logarithmic.clamp(max=half - 1)
    return side + torch.where(far < exact, far, logarithmic)


class MultiHeadAttention(nn.Module):
    """Project to heads, attend, concatenate the heads, project back."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.d_k = config.d_k
        self.w_q = nn.Linear(config.d_model, config.d_model)
        self.w_k = nn.Linear(config.d_model, config.d_model)
        self.w_v = nn.Linear(config.d_model, config.d_model)
        self.w_o = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch, length, d_model = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(batch, length, self.n_heads, self.d_k).transpose(1, 2)  # (B, h, T, d_k)

        out, weights = attention(
            split(self.w_q(x)), split(self.w_k(x)), split(self.w_v(x)), mask, self.dropout, bias
        )
        out = out.transpose(1, 2).reshape(batch, length, d_model)  # (B, T, d_model)
        return self.w_o(out), weights


class FeedForward(nn.Module):
    """Position-wise feed-forward: two linear maps with a GELU between."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w_1 = nn.Linear(config.d_model, config.d_ff)
        self.w_2 = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.w_2(self.dropout(nn.functional.gelu(self.w_1(x))))
        return out


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each followed by residual + LayerNorm (post-norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(config)
        self.norm1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ff = FeedForward(config)
        self.norm2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        attended, weights = self.attn(x, mask, bias)
        x = self.norm1(x + self.dropout(attended))
        x = self.norm2(x + self.dropout(self.ff(x)))
        return x, weights


class SentimentTransformer(nn.Module):
    """Encoder + classifier on [CLS] or on the mean of the real tokens (config.pooling). forward()
    returns logits and every layer's attention."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        if config.scale_embedding:
            # N(0, 1/d_model) so that, scaled by sqrt(d_model), embeddings start at unit size
            # like the positional encoding instead of drowning it
            with torch.no_grad():
                nn.init.normal_(self.tok_embed.weight, std=config.d_model**-0.5)
                self.tok_embed.weight[0].zero_()
        if config.positional is Positional.SINUSOIDAL:
            self.register_buffer(
                "pos_table", sinusoidal_table(config.max_len, config.d_model), persistent=False
            )
            self.pos_embed: nn.Embedding | None = None
        else:
            self.pos_embed = nn.Embedding(config.max_len, config.d_model)
        self.embed_norm = (
            nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            if config.embedding_norm
            else nn.Identity()
        )
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))
        self.relative_bias = (
            nn.Embedding(config.relative_buckets, config.n_heads) if config.relative_buckets else None
        )
        self.pooler = nn.Linear(config.d_model, config.d_model) if config.pooler else None
        self.classifier = nn.Linear(config.d_model, config.num_labels)

    def positions(self, length: int) -> Tensor:
        """Positional vectors for positions 0..length-1: (length, d_model)."""
        if self.pos_embed is not None:
            offset = self.config.position_offset
            return self.pos_embed.weight[offset : offset + length]
        table = self.get_buffer("pos_table")
        return table[:length]

    def position_bias(self, length: int, device: torch.device) -> Tensor | None:
        """The relative-position bias on the scores, (1, heads, T, T), or None without one."""
        if self.relative_bias is None:
            return None
        buckets = relative_buckets(
            length, self.config.relative_buckets, self.config.relative_max_distance, device
        )
        bias: Tensor = self.relative_bias(buckets).permute(2, 0, 1).unsqueeze(0)
        return bias

    def embed(self, input_ids: Tensor) -> Tensor:
        """The input of the first layer: token plus position, (B, T, d_model)."""
        x = self.tok_embed(input_ids) * self.config.embedding_scale + self.positions(input_ids.size(1))
        out: Tensor = self.dropout(self.embed_norm(x))
        return out

    def run_layers(
        self, x: Tensor, attention_mask: Tensor, first: int = 0, last: int | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """x (B, T, d_model) through layers first..last-1: their output and each one's attention."""
        mask = attention_mask[:, None, None, :]  # (B, 1, 1, T): broadcast over heads and queries
        bias = self.position_bias(x.size(1), x.device)
        all_weights = []
        for layer in self.layers[first:last]:
            x, weights = layer(x, mask, bias)
            all_weights.append(weights)
        return x, all_weights

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden states (B, T, d_model) and attentions (B, layers, heads, T, T)."""
        x, all_weights = self.run_layers(self.embed(input_ids), attention_mask)
        return x, torch.stack(all_weights, dim=1)  # (B, layers, heads, T, T)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """input_ids, attention_mask: (B, T) int64, 1 = real token. Returns logits (B, labels)
        and attentions (B, layers, heads, T, T)."""
        x, attentions = self.encode(input_ids, attention_mask)
        return self.classify(x, attention_mask), attentions

    def classify(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits (B, labels) from the last layer's output (B, T, d_model)."""
        if self.config.pooling is Pooling.MEAN:  # padding is 0 in the mask: it adds nothing
            weights = attention_mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        else:
            pooled = x[:, 0]  # [CLS]: (B, d_model)
        if self.pooler is not None:
            pooled = torch.tanh(self.pooler(pooled))
        logits: Tensor = self.classifier(self.dropout(pooled))
        return logits
