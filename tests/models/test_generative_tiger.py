"""TIGER's mechanisms in the generative retriever: token-per-position encoder input, the
KV-cached beam search (equal to the uncached one), and the cold-item share of the top K."""

from __future__ import annotations

import pytest
import torch
from _sequence_data import chain_split, sid_features, unique_codes

from torchrec_recsys.data.sequences import make_sequence_batch
from torchrec_recsys.errors import ConfigError
from torchrec_recsys.models.generative import GenerativeRetriever, cap_cold_items

SIZES, NUM_ITEMS = [4, 3, 3], 30


def _model(
    input_mode: str = "tokens", cold: torch.Tensor | None = None, share: float = 1.0, beam=8
) -> tuple[GenerativeRetriever, object]:
    torch.manual_seed(0)
    codes = unique_codes(NUM_ITEMS, SIZES, seed=1)
    features = sid_features(codes, SIZES, 16)
    model = GenerativeRetriever(
        features.item_feature,
        features.user_feature,
        features.item_tokens,
        SIZES,
        6,
        1,
        2,
        32,
        0.0,
        beam,
        "cpu",
        "cpu",
        input_mode=input_mode,
        cold_items=cold,
        cold_share=share,
        top_k=4,
    ).eval()
    return model, features


def _batch(features: object, rows: torch.Tensor, seed: int = 2) -> object:
    split = chain_split(12, NUM_ITEMS, 6, seed=seed)
    return make_sequence_batch(split, features, rows, torch.ones(len(rows))).sparse_features


def test_tokens_input_gives_each_token_a_position_and_masks_padding() -> None:
    model, features = _model("tokens")
    split = chain_split(5, NUM_ITEMS, 6, seed=3)
    kjt = make_sequence_batch(split, features, torch.arange(5), torch.ones(5)).sparse_features
    states, mask = model.encode(kjt)
    lengths = split.history.lengths.long()  # items per example
    levels = len(SIZES)
    assert states.shape == (5, 1 + int(lengths.max()) * levels, 16)  # user token first
    assert torch.equal(mask.sum(dim=1), 1 + lengths * levels)
    assert model(kjt, split.targets).shape == (5, levels, 1 + sum(SIZES))
    summed, _ = _model("summed")
    s_states, s_mask = summed.encode(kjt)
    assert s_states.shape == (5, 1 + int(lengths.max()), 16)
    assert torch.equal(s_mask.sum(dim=1), 1 + lengths)


@pytest.mark.parametrize("input_mode", ["tokens", "summed"])
def test_cached_beam_search_equals_the_uncached_one(input_mode: str) -> None:
    model, features = _model(input_mode)
    g = torch.Generator().manual_seed(4)
    for start in (0, 4, 8):  # several batches, with excluded items
        rows = torch.arange(start, start + 4)
        kjt = _batch(features, rows)
        exclude = torch.rand(4, NUM_ITEMS, generator=g) < 0.3
        for width in (1, 5, 11):
            ref = model.generate(kjt, exclude, width, use_cache=False)
            got = model.generate(kjt, exclude, width, use_cache=True)
            assert torch.equal(got[0], ref[0])
            assert torch.equal(got[2], ref[2])
            assert torch.allclose(got[1], ref[1], atol=1e-5)


def test_cold_items_enter_the_top_k_only_as_the_share_allows() -> None:
    cold = torch.zeros(NUM_ITEMS, dtype=torch.bool)
    cold[::2] = True  # half the catalogue without training interactions
    kjt = None
    counts = {}
    for share in (0.0, 0.5, 1.0):
        model, features = _model(cold=cold, share=share, beam=12)
        kjt = kjt if kjt is not None else _batch(features, torch.arange(8))
        items, scores, _ = model.generate(kjt)
        top = items[:, :4]
        in_top = cold[top.clamp(min=0)] & (top >= 0)
        counts[share] = int(in_top.sum())
        assert int(in_top.sum(dim=1).max()) <= int(share * 4)
        if share == 0:
            assert not bool(cold[items[items >= 0]].any()), "a cold item was generated"
    assert counts[1.0] > 0, "no cold item reached the top K without a limit"


def test_one_search_for_every_cold_share_equals_a_search_at_each() -> None:
    cold = torch.zeros(NUM_ITEMS, dtype=torch.bool)
    cold[1::3] = True
    shares = [0.0, 0.25, 0.5, 1.0]
    model, features = _model(cold=cold, beam=12)
    kjt = _batch(features, torch.arange(8))
    exclude = torch.rand(8, NUM_ITEMS, generator=torch.Generator().manual_seed(5)) < 0.2
    together = model.generate_by_cold_share(kjt, shares, exclude)
    assert list(together) == shares
    lists = set()
    for share in shares:
        model.cold_share = share
        alone = model.generate(kjt, exclude)
        assert torch.equal(together[share][0], alone[0])
        assert torch.equal(together[share][1], alone[1])
        assert torch.equal(together[share][2], alone[2])
        lists.add(tuple(alone[0][:, :4].flatten().tolist()))
    assert len(lists) > 2, "the shares should change the top K here"


def test_cap_moves_cold_items_past_the_quota_behind_the_warm_ones() -> None:
    cold = torch.tensor([True, False, True, True, False, False])
    items = torch.tensor([[0, 2, 3, 1, 4, 5]])
    scores = -torch.arange(6.0)[None]
    out, out_scores, _ = cap_cold_items(items, scores, cold, top_k=4, share=0.25)
    assert out.tolist() == [[0, 1, 4, 5, 2, 3]]
    assert out_scores.tolist() == [[0.0, -3.0, -4.0, -5.0, -1.0, -2.0]]


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_cold_share_outside_the_unit_interval_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match=r"sequence.cold_share = .* must be in \[0, 1\]"):
        _model(share=share)


def test_beam_narrower_than_k_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"beam width 3 is smaller than K = 4"):
        _model(beam=3)
