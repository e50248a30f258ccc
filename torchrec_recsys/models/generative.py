"""Generative retrieval over semantic IDs (TIGER, Rajput et al. NeurIPS 2023).

    KJT history_sid (each history item as its L' SID tokens) [+ user_token]
      -> EmbeddingCollection (unpooled, sharded by DMP)          [B, T * L', D]
      -> sum of each item's L' token embeddings + recency embedding,
         user token first                                        [B, 1 + T, D]
      -> T5 encoder (``transformers``; relative position bias)   [B, 1 + T, D]
      -> T5 decoder, teacher-forced on the target's SID tokens   [B, L', V]   (training)
      -> constrained beam search over a PrefixTrie               [B, W] items (inference)

The transformer is a small ``transformers.T5ForConditionalGeneration`` built from a config
with our own vocabulary (1 + sum of the level sizes), not hand-written attention: T5 is
TIGER's architecture, is well kept, takes ``inputs_embeds`` (so the encoder input comes from
the TorchRec EmbeddingCollection) and its decoder's tied embedding/softmax over ~200 tokens is
tiny. Beam search is our own short loop (L' steps): it needs per-query masks (training items
excluded) and exact sequence log-probabilities, which ``generate`` + ``prefix_allowed_tokens_fn``
make awkward and slower for a handful of steps.

Encoder positions are items, not tokens: TIGER feeds the L' tokens of each history item as
L' encoder positions; we sum them into one position per item (the token embeddings are still
per level, so the item's code tuple is what the encoder sees). That makes the encoder as long
as SASRec's sequence, which on 2 shared CPU cores was the difference between ~0.5 s and ~4 s
per step of 256 examples at history 20 x 4 tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from torchrec_recsys.data.features import SparseFeature
from torchrec_recsys.models.embeddings import build_ec
from torchrec_recsys.models.sasrec import padded_sequence
from torchrec_recsys.semantic_ids.tokenizer import PrefixTrie

START = 0
"""Decoder start / padding token."""

# (decoded token prefixes [Q, beams, t]) -> next-token log-probabilities [Q, beams, V]
StepFn = Callable[[torch.Tensor], torch.Tensor]


def constrained_beam_search(
    step: StepFn,
    trie: PrefixTrie,
    offsets: list[int],
    beam_width: int,
    num_queries: int,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Beam search that only extends prefixes of valid SID tuples.

    At depth t every beam's candidates are the codes c with ``trie.children[t][node, c] >= 0``
    (and, with ``allowed`` [Q, I] bool, at least one allowed item below the child); all
    others get -inf. A beam's score is the sum of the model's log-probabilities of its tokens
    (``step`` returns log-softmax over the whole vocabulary), so with ``beam_width`` >= the
    number of items the result is every allowed item ranked by sequence log-probability.

    Returns:
        items [Q, W] catalogue rows (-1 where fewer than W allowed items exist),
        scores [Q, W] sequence log-probabilities (-inf for those),
        tokens [Q, W, L'] the decoded token ids.
    """
    device = trie.children[0].device
    nodes = torch.zeros(num_queries, 1, dtype=torch.int64, device=device)  # [Q, beams]
    scores = torch.zeros(num_queries, 1, device=device)  # [Q, beams]
    tokens = torch.zeros(num_queries, 1, 0, dtype=torch.int64, device=device)  # [Q, beams, t]
    for t in range(trie.levels):
        size = trie.sizes[t]
        logp = step(tokens)[..., offsets[t] : offsets[t] + size]  # [Q, beams, K_t]
        child = trie.children[t][nodes]  # [Q, beams, K_t]
        valid = child >= 0
        if allowed is not None:
            counts = trie.allowed_counts(allowed, t + 1)  # [Q, nodes_{t+1}]
            below = counts.gather(1, child.clamp(min=0).flatten(1)).view_as(child)
            valid &= below > 0
        cand = (scores[..., None] + logp).masked_fill(~valid, float("-inf"))  # [Q, beams, K_t]
        width = min(beam_width, cand.shape[1] * size)
        top = cand.flatten(1).topk(width, dim=1)  # [Q, width]
        beam, code = top.indices // size, top.indices % size
        scores = top.values
        nodes = child.flatten(1).gather(1, top.indices).clamp(min=0)  # [Q, width]
        prefix = tokens.gather(1, beam[..., None].expand(-1, -1, tokens.shape[2]))
        tokens = torch.cat([prefix, (code + offsets[t])[..., None]], dim=2)  # [Q, width, t+1]
    items = trie.leaf_item[nodes]  # [Q, W]
    dead = torch.isinf(scores)
    items = items.masked_fill(dead, -1)
    if items.shape[1] < beam_width:  # fewer items than beams in the whole catalogue
        pad = beam_width - items.shape[1]
        items = nn.functional.pad(items, (0, pad), value=-1)
        scores = nn.functional.pad(scores, (0, pad), value=float("-inf"))
        tokens = nn.functional.pad(tokens, (0, 0, 0, pad), value=START)
    return items, scores, tokens


class GenerativeRetriever(nn.Module):
    """T5 encoder-decoder reading SID-token histories and writing the next item's SID."""

    def __init__(
        self,
        history_feature: SparseFeature,
        user_feature: SparseFeature | None,
        item_tokens: torch.Tensor,
        sizes: list[int],
        max_history: int,
        layers: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        beam_width: int,
        sparse_device: torch.device | str = "meta",
        dense_device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        d = history_feature.embedding_dim
        self.history_key = history_feature.name
        self.user_key = user_feature.name if user_feature is not None else None
        self.levels = len(sizes)
        self.max_tokens = max_history * self.levels
        self.offsets = [1 + sum(sizes[:t]) for t in range(len(sizes))]
        self.beam_width = beam_width
        features = [history_feature] + ([user_feature] if user_feature is not None else [])
        self.ec = build_ec(features, sparse_device)
        # T5's cross-attention carries no position: tell every history item its recency
        self.recency = nn.Embedding(max_history, d, device=dense_device)
        nn.init.normal_(self.recency.weight, std=0.02)
        config = T5Config(
            vocab_size=1 + sum(sizes),
            d_model=d,
            d_kv=d // heads,
            d_ff=ff_dim,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=heads,
            dropout_rate=dropout,
            feed_forward_proj="relu",
            decoder_start_token_id=START,
            pad_token_id=START,
            eos_token_id=START,
            tie_word_embeddings=True,
            use_cache=False,
        )
        self.t5 = T5ForConditionalGeneration(config).to(dense_device)
        self.register_buffer("item_tokens", item_tokens.to(dense_device), persistent=False)
        codes = item_tokens - torch.tensor(self.offsets)[None, :]  # [I, L']
        self.trie = PrefixTrie(codes, sizes)

    def encode(self, sparse: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states [B, S, D] and attention mask [B, S] of a history KJT."""
        out = self.ec(sparse)
        x, lengths = padded_sequence(out, self.history_key, self.max_tokens)  # [B, T * L', D]
        b, _, d = x.shape
        items = (x.shape[1] + self.levels - 1) // self.levels
        x = nn.functional.pad(x, (0, 0, 0, items * self.levels - x.shape[1]))
        x = x.view(b, items, self.levels, d).sum(dim=2)  # [B, T, D]: one position per item
        steps = torch.arange(items, device=x.device)
        num_items = lengths // self.levels  # [B]
        mask = steps[None, :] < num_items[:, None]  # [B, T]
        recency = (num_items[:, None] - 1 - steps[None, :]).clamp(min=0)  # [B, T], 0 = newest
        x = x + self.recency(recency)  # [B, T, D]
        if self.user_key is not None:
            u, _ = padded_sequence(out, self.user_key, 1)  # [B, 1, D]
            x = torch.cat([u, x], dim=1)  # [B, 1 + T, D]
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # [B, 1 + T]
        mask = mask.clone()
        mask[:, 0] = True  # an empty history still attends to one (zero) position
        states = self.t5.encoder(inputs_embeds=x, attention_mask=mask.long()).last_hidden_state
        return states, mask  # [B, S, D], [B, S]

    def forward(self, sparse: object, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L', V] of the SID tokens of catalogue rows ``targets``."""
        states, mask = self.encode(sparse)
        labels = self.item_tokens[targets]  # [B, L']
        decoder_in = torch.cat([torch.full_like(labels[:, :1], START), labels[:, :-1]], dim=1)
        out = self.t5(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            attention_mask=mask.long(),
            decoder_input_ids=decoder_in,
        )
        return out.logits  # [B, L', V]

    def step_fn(self, states: torch.Tensor, mask: torch.Tensor) -> StepFn:
        """Next-token log-probabilities for beams of prefixes, the encoder run once."""

        def step(prefixes: torch.Tensor) -> torch.Tensor:
            q, beams, t = prefixes.shape
            start = torch.full((q, beams, 1), START, dtype=torch.int64, device=prefixes.device)
            decoder_in = torch.cat([start, prefixes], dim=2).view(q * beams, t + 1)
            enc = states.repeat_interleave(beams, dim=0)  # [Q * beams, S, D]
            out = self.t5(
                encoder_outputs=BaseModelOutput(last_hidden_state=enc),
                attention_mask=mask.repeat_interleave(beams, dim=0).long(),
                decoder_input_ids=decoder_in,
            )
            logp = out.logits[:, -1].log_softmax(dim=-1)  # [Q * beams, V]
            return logp.view(q, beams, -1)

        return step

    @torch.no_grad()
    def rank_items(
        self, sparse: object, exclude: torch.Tensor, depth: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The beam's items [B, W] best first and their sequence log-probabilities [B, W];
        ``exclude`` [B, I] items are never generated."""
        items, scores, _ = self.generate(sparse, exclude, depth)
        return items, scores

    @torch.no_grad()
    def generate(
        self, sparse: object, exclude: torch.Tensor | None = None, beam_width: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constrained beam search: items [B, W], scores [B, W], tokens [B, W, L']."""
        states, mask = self.encode(sparse)
        self.trie = self.trie.to(states.device)
        return constrained_beam_search(
            self.step_fn(states, mask),
            self.trie,
            self.offsets,
            beam_width or self.beam_width,
            states.shape[0],
            allowed=None if exclude is None else ~exclude,
        )

    @torch.no_grad()
    def sequence_log_probs(self, sparse: object, items: torch.Tensor) -> torch.Tensor:
        """Brute force: log p(SID tuple of each of ``items`` [I]) for every query [B, I]."""
        states, mask = self.encode(sparse)
        b, n = states.shape[0], items.numel()
        labels = self.item_tokens[items]  # [I, L']
        decoder_in = torch.cat([torch.full_like(labels[:, :1], START), labels[:, :-1]], dim=1)
        out = self.t5(
            encoder_outputs=BaseModelOutput(last_hidden_state=states.repeat_interleave(n, 0)),
            attention_mask=mask.repeat_interleave(n, 0).long(),
            decoder_input_ids=decoder_in.repeat(b, 1),
        )
        logp = out.logits.log_softmax(dim=-1)  # [B * I, L', V]
        picked = logp.gather(2, labels.repeat(b, 1)[..., None])[..., 0]  # [B * I, L']
        return picked.sum(dim=1).view(b, n)
