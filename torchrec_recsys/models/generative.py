"""Generative retrieval over semantic IDs (TIGER, Rajput et al. NeurIPS 2023).

    KJT history_sid (each history item as its L' SID tokens) [+ user_token]
      -> EmbeddingCollection (unpooled, sharded by DMP)          [B, T * L', D]
      -> input "tokens" (TIGER): every token its own position,
         + level embedding + its item's recency embedding       [B, 1 + T * L', D]
         input "summed": each item's L' tokens summed + recency  [B, 1 + T, D]
         (user token first in both)
      -> T5 encoder (``transformers``; relative position bias)   [B, S, D]
      -> T5 decoder, teacher-forced on the target's SID tokens   [B, L', V]   (training)
      -> constrained beam search over a PrefixTrie, the decoder's
         self- and cross-attention keys/values cached             [B, W] items (inference)

The transformer is a small ``transformers.T5ForConditionalGeneration`` built from a config
with our own vocabulary (1 + sum of the level sizes), not hand-written attention: T5 is
TIGER's architecture, is well kept, takes ``inputs_embeds`` (so the encoder input comes from
the TorchRec EmbeddingCollection) and its decoder's tied embedding/softmax over ~200 tokens is
tiny. Beam search is our own short loop (L' steps): it needs per-query masks (training items
excluded) and exact sequence log-probabilities, which ``generate`` + ``prefix_allowed_tokens_fn``
make awkward and slower for a handful of steps.

Encoder positions (``input_mode``): ``"tokens"`` is TIGER's input, the L' tokens of each
history item at L' encoder positions, each with a learned level embedding (which of the L'
levels it is) and its item's recency embedding (T5's cross-attention carries no position).
``"summed"`` sums each item's tokens into one position per item (the token embeddings are
still per level, so the item's code tuple is what the encoder sees): an encoder L' times
shorter, as long as SASRec's. ``transformers`` runs T5's attention through
``torch.nn.functional.scaled_dot_product_attention`` with the relative position bias as its
additive mask (``config._attn_implementation == "sdpa"``).

Cold items (no training interactions) are in the trie like every item. A cold item's
collision code cannot be learned (no target ever spelled it), so at the collision level it
is scored by its prefix's best continuation; with ``cold_share`` < 1 at most
``floor(cold_share * top_k)`` cold items stay in a list's top ``top_k`` (the rest move
behind the warm ones), and 0 removes them from the search (TIGER's threshold on the share of
unseen items in the top K, tuned on validation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from torchrec_recsys.data.features import SparseFeature
from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.models.embeddings import build_ec
from torchrec_recsys.models.sasrec import padded_sequence
from torchrec_recsys.semantic_ids.tokenizer import AllowedBelow, PrefixTrie

START = 0
"""Decoder start / padding token."""

INPUT_MODES = ("tokens", "summed")
"""Encoder inputs: every SID token its own position (TIGER), or each item's tokens summed."""

Beams = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""A beam search's items [Q, W], sequence log-probabilities [Q, W] and tokens [Q, W, L']."""

# (decoded token prefixes [Q, beams, t], parent beam of each [Q, beams] or None at t = 0)
#   -> next-token log-probabilities [Q, beams, V]
StepFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def constrained_beam_search(
    step: StepFn,
    trie: PrefixTrie,
    offsets: list[int],
    beam_width: int,
    num_queries: int,
    allowed: torch.Tensor | None = None,
    cold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Beam search that only extends prefixes of valid SID tuples.

    At depth t every beam's candidates are the codes c with ``trie.children[t][node, c] >= 0``
    (and, with ``allowed`` [Q, I] bool, at least one allowed item below the child); all
    others get -inf. A beam's score is the sum of the model's log-probabilities of its tokens
    (``step`` returns log-softmax over the whole vocabulary), so with ``beam_width`` >= the
    number of items the result is every allowed item ranked by sequence log-probability.
    ``step`` is also told each beam's parent beam of the previous depth (so a decoder cache
    can follow the beams). With ``cold`` [I] bool, a cold item's last token is scored as the
    best token of that level (its prefix's best continuation).

    Returns:
        items [Q, W] catalogue rows (-1 where fewer than W allowed items exist),
        scores [Q, W] sequence log-probabilities (-inf for those),
        tokens [Q, W, L'] the decoded token ids.
    """
    device = trie.children[0].device
    nodes = torch.zeros(num_queries, 1, dtype=torch.int64, device=device)  # [Q, beams]
    scores = torch.zeros(num_queries, 1, device=device)  # [Q, beams]
    tokens = torch.zeros(num_queries, 1, 0, dtype=torch.int64, device=device)  # [Q, beams, t]
    parents: torch.Tensor | None = None  # [Q, beams] beam of the previous depth
    below = None if allowed is None else AllowedBelow(trie, allowed)
    for t in range(trie.levels):
        size = trie.sizes[t]
        logp = step(tokens, parents)[..., offsets[t] : offsets[t] + size]  # [Q, beams, K_t]
        child = trie.children[t][nodes]  # [Q, beams, K_t]
        valid = child >= 0
        if cold is not None and t == trie.levels - 1:
            is_cold = cold[trie.leaf_item[child.clamp(min=0)]] & valid  # [Q, beams, K_t]
            best = logp.max(dim=-1, keepdim=True).values.expand_as(logp)
            logp = torch.where(is_cold, best, logp)
        if below is not None:
            valid &= below(t + 1, child.clamp(min=0)) > 0  # an allowed item under the child
        cand = (scores[..., None] + logp).masked_fill(~valid, float("-inf"))  # [Q, beams, K_t]
        width = min(beam_width, cand.shape[1] * size)
        top = cand.flatten(1).topk(width, dim=1)  # [Q, width]
        beam, code = top.indices // size, top.indices % size
        parents = beam
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


def cap_cold_items(
    items: torch.Tensor, scores: torch.Tensor, cold: torch.Tensor, top_k: int, share: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ranked lists with at most ``floor(share * top_k)`` cold items in each top ``top_k``.

    Cold items past that quota move behind every other item of the list (in their order);
    the rest keep theirs. Args: ``items`` [Q, W] (-1 = empty), ``scores`` [Q, W], ``cold``
    [I] bool. Returns items, scores and the permutation [Q, W] applied to the columns.
    """
    is_cold = cold[items.clamp(min=0)] & (items >= 0)  # [Q, W]
    quota = int(share * top_k + 1e-9)
    demoted = is_cold & (is_cold.long().cumsum(dim=1) > quota)  # [Q, W]
    width = items.shape[1]
    key = torch.arange(width, device=items.device)[None, :] + width * demoted.long()  # [Q, W]
    order = key.argsort(dim=1, stable=True)
    return items.gather(1, order), scores.gather(1, order), order


def check_cold_share(share: float) -> None:
    """Raise :class:`ConfigError` unless ``share`` (the cold items' share of a top K) is in
    [0, 1]."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(
            f"sequence.cold_share = {share!r} must be in [0, 1] (the most cold items' share "
            f"of a top-K list; 0 = never recommend cold items, 1 = no limit)"
        )


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
        input_mode: str = "tokens",
        cold_items: torch.Tensor | None = None,
        cold_share: float = 1.0,
        top_k: int = 10,
    ) -> None:
        """``cold_items`` [I] bool: items without training interactions (see the module
        docstring for ``cold_share`` and ``top_k``).

        Raises:
            ConfigError: ``input_mode`` is not one of :data:`INPUT_MODES`, ``cold_share`` is
                outside [0, 1] or ``beam_width`` < ``top_k``.
        """
        super().__init__()
        if input_mode not in INPUT_MODES:
            raise ConfigError(
                f"sequence.generative_input = {input_mode!r} is not one of {', '.join(INPUT_MODES)}"
            )
        check_cold_share(cold_share)
        if beam_width < top_k:
            raise ConfigError(
                f"beam width {beam_width} is smaller than K = {top_k}: the beam cannot fill a "
                f"top-{top_k} list"
            )
        d = history_feature.embedding_dim
        self.input_mode = input_mode
        self.cold_share = cold_share
        self.top_k = top_k
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
        # which SID level a token is; only the token-per-position input has one (an unused
        # weight would get no optimizer state, and its checkpoints would not load back)
        self.level: nn.Embedding | None = None
        if input_mode == "tokens":
            self.level = nn.Embedding(self.levels, d, device=dense_device)
            nn.init.normal_(self.level.weight, std=0.02)
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
        if cold_items is None:
            cold_items = torch.zeros(item_tokens.shape[0], dtype=torch.bool)
        if cold_items.shape != item_tokens.shape[:1]:
            raise DataError(
                f"cold_items has shape {tuple(cold_items.shape)}, expected "
                f"({item_tokens.shape[0]},): one flag per catalogue item"
            )
        self.register_buffer("cold_items", cold_items.bool().to(dense_device), persistent=False)
        codes = item_tokens - torch.tensor(self.offsets)[None, :]  # [I, L']
        self.trie = PrefixTrie(codes, sizes)

    def encode(self, sparse: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states [B, S, D] and attention mask [B, S] of a history KJT."""
        out = self.ec(sparse)
        x, lengths = padded_sequence(out, self.history_key, self.max_tokens)  # [B, T * L', D]
        b, _, d = x.shape
        items = (x.shape[1] + self.levels - 1) // self.levels
        x = nn.functional.pad(x, (0, 0, 0, items * self.levels - x.shape[1]))
        steps = torch.arange(items, device=x.device)
        num_items = lengths // self.levels  # [B]
        mask = steps[None, :] < num_items[:, None]  # [B, T]
        recency = (num_items[:, None] - 1 - steps[None, :]).clamp(min=0)  # [B, T], 0 = newest
        if self.input_mode == "summed":
            x = x.view(b, items, self.levels, d).sum(dim=2)  # [B, T, D]: one position per item
            x = x + self.recency(recency)  # [B, T, D]
        else:  # TIGER: one position per token, told its level and its item's recency
            assert self.level is not None
            x = x.view(b, items, self.levels, d) + self.level.weight  # [B, T, L', D]
            x = (x + self.recency(recency)[:, :, None]).view(b, items * self.levels, d)
            mask = mask.repeat_interleave(self.levels, dim=1)  # [B, T * L']
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
        """Next-token log-probabilities for beams of prefixes, the encoder run once and the
        decoder run over each whole prefix (no cache: the reference for :meth:`cached_step_fn`)."""

        def step(prefixes: torch.Tensor, parents: torch.Tensor | None = None) -> torch.Tensor:
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

    def cached_step_fn(self, states: torch.Tensor, mask: torch.Tensor) -> StepFn:
        """As :meth:`step_fn`, but each step feeds only the newest token: the decoder's
        self-attention keys/values (and the cross-attention ones over the encoder states,
        computed at the first step) are kept in an ``EncoderDecoderCache`` whose rows follow
        the beams (``reorder_cache`` by parent beam)."""
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        q = states.shape[0]
        rows = torch.arange(q, device=states.device)  # [Q * beams] query of each cache row
        width = 1  # beams per query of the cache rows

        def step(prefixes: torch.Tensor, parents: torch.Tensor | None = None) -> torch.Tensor:
            nonlocal rows, width
            _, beams, t = prefixes.shape
            if t == 0:
                last = torch.full((q, 1), START, dtype=torch.int64, device=prefixes.device)
            else:
                assert parents is not None, "a cached step needs each beam's parent"
                base = torch.arange(q, device=parents.device)[:, None] * width  # [Q, 1]
                flat = (base + parents).flatten()  # [Q * beams] previous cache row
                cache.reorder_cache(flat)
                rows = rows[flat]
                last = prefixes[:, :, -1].reshape(q * beams, 1)
            width = beams
            out = self.t5(
                encoder_outputs=BaseModelOutput(last_hidden_state=states[rows]),
                attention_mask=mask[rows].long(),
                decoder_input_ids=last,
                past_key_values=cache,
                use_cache=True,
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
        self,
        sparse: object,
        exclude: torch.Tensor | None = None,
        beam_width: int | None = None,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constrained beam search: items [B, W], scores [B, W], tokens [B, W, L'], with the
        cold-item share of :attr:`cold_share` (``use_cache=False``: recompute the decoder
        over each whole prefix, the reference the cached search must equal)."""
        share = self.cold_share
        return self.generate_by_cold_share(sparse, [share], exclude, beam_width, use_cache)[share]

    @torch.no_grad()
    def generate_by_cold_share(
        self,
        sparse: object,
        shares: list[float],
        exclude: torch.Tensor | None = None,
        beam_width: int | None = None,
        use_cache: bool = True,
    ) -> dict[float, Beams]:
        """:meth:`generate` at each cold-item share of ``shares`` (what tuning the share on
        validation needs), encoding once and searching at most twice: once without cold
        items (share 0) and once with them, every share above 0 being a cap applied to that
        one search's lists (:func:`cap_cold_items`)."""
        for share in shares:
            check_cold_share(share)
        states, mask = self.encode(sparse)
        self.trie = self.trie.to(states.device)
        step = self.cached_step_fn if use_cache else self.step_fn
        width = beam_width or self.beam_width

        def search(allowed: torch.Tensor | None, cold: torch.Tensor | None) -> Beams:
            return constrained_beam_search(
                step(states, mask),
                self.trie,
                self.offsets,
                width,
                states.shape[0],
                allowed=allowed,
                cold=cold,
            )

        allowed = None if exclude is None else ~exclude  # [B, I]
        cold = self.cold_items
        if not bool(cold.any()):  # no cold item: the share changes nothing
            result = search(allowed, None)
            return {share: result for share in shares}
        out = {}
        if 0 in shares:  # cold items are never recommended: out of the search
            warm = ~cold.expand(states.shape[0], -1) if allowed is None else allowed & ~cold
            out[0.0] = search(warm, None)
        if any(share > 0 for share in shares):
            items, scores, tokens = search(allowed, cold)
            for share in (s for s in shares if s > 0):
                if share == 1:
                    out[share] = items, scores, tokens
                    continue
                capped, capped_scores, order = cap_cold_items(
                    items, scores, cold, self.top_k, share
                )
                out[share] = (
                    capped,
                    capped_scores,
                    tokens.gather(1, order[..., None].expand_as(tokens)),
                )
        return {share: out[share] for share in shares}

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
