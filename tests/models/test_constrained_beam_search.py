"""Constrained beam search: only real SID tuples, and exact at full width.

* Property (many random tries/logits/beam widths/exclusions): every generated tuple is an item's
  tuple, items are distinct, excluded items never appear, scores are sorted and equal the sum
  of the step log-probabilities of the decoded tokens.
* With a beam as wide as the catalogue the result is exactly the brute-force ranking of all
  (allowed) items by sequence log-probability, for a synthetic step function and for the real
  T5 generative retriever (``sequence_log_probs``).
"""

from __future__ import annotations

import pytest
import torch
from _sequence_data import chain_split, sid_features, unique_codes

from torchrec_recsys.data.sequences import make_sequence_batch
from torchrec_recsys.errors import DataError
from torchrec_recsys.models.generative import GenerativeRetriever, constrained_beam_search
from torchrec_recsys.semantic_ids.tokenizer import AllowedBelow, PrefixTrie, check_unique_tuples


def _random_step(vocab: int, seed: int):  # type: ignore[no-untyped-def]
    """A deterministic function of the prefix: random logits looked up by a prefix hash."""
    table = torch.randn(997, vocab, generator=torch.Generator().manual_seed(seed)) * 3

    def step(prefixes: torch.Tensor, parents: torch.Tensor | None = None) -> torch.Tensor:
        # [Q, beams, t] -> [Q, beams, V]
        weights = torch.tensor([31, 17, 7, 3, 2])[: prefixes.shape[2]]
        key = (prefixes * weights).sum(-1) + 101 * prefixes.shape[2]  # [Q, beams]
        return table[key % 997].log_softmax(-1)

    return step


def _brute_force(step, tokens: torch.Tensor, queries: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """[Q, I] sum over levels of log p(token_t | tokens_<t), one item per beam."""
    n, levels = tokens.shape
    prefixes = tokens[None].expand(queries, n, levels)
    total = torch.zeros(queries, n)
    for t in range(levels):
        logp = step(prefixes[..., :t])  # [Q, I, V]
        total += logp.gather(2, prefixes[..., t : t + 1])[..., 0]
    return total


@pytest.mark.parametrize("seed", range(12))
def test_beam_search_only_emits_valid_distinct_allowed_items(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = [int(torch.randint(2, 6, (1,), generator=g)) for _ in range(3)]
    num_items = int(torch.randint(5, 40, (1,), generator=g))
    num_items = min(num_items, sizes[0] * sizes[1] * sizes[2])
    codes = unique_codes(num_items, sizes, seed)
    offsets = [1 + sum(sizes[:t]) for t in range(3)]
    tokens = codes + torch.tensor(offsets)
    trie = PrefixTrie(codes, sizes)
    queries = 4
    allowed = torch.rand(queries, num_items, generator=g) > 0.3
    width = int(torch.randint(1, num_items + 3, (1,), generator=g))
    step = _random_step(1 + sum(sizes), seed)
    items, scores, out_tokens = constrained_beam_search(
        step, trie, offsets, width, queries, allowed
    )
    brute = _brute_force(step, tokens, queries)  # [Q, I]
    valid = {tuple(t.tolist()) for t in tokens}
    for q in range(queries):
        live = torch.isfinite(scores[q])
        assert int(live.sum()) == min(width, int(allowed[q].sum()))
        got = items[q][live]
        assert len(set(got.tolist())) == len(got), "an item was generated twice"
        assert bool(allowed[q, got].all()), "an excluded item was generated"
        for item, tup, score in zip(got, out_tokens[q][live], scores[q][live], strict=True):
            assert tuple(tup.tolist()) in valid, "a tuple outside the trie was generated"
            assert tuple(tup.tolist()) == tuple(tokens[item].tolist())
            assert torch.isclose(score, brute[q, item], atol=1e-5)
        assert bool((scores[q][live][:-1] >= scores[q][live][1:]).all())
        assert bool((items[q][~live] == -1).all())


@pytest.mark.parametrize("seed", range(6))
def test_allowed_below_counts_the_allowed_items_under_each_node(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sizes = [3, 4, 5]
    codes = unique_codes(50, sizes, seed)
    trie = PrefixTrie(codes, sizes)
    queries = 5
    allowed = torch.rand(queries, 50, generator=g) > 0.2
    allowed[0] = True  # a query with nothing excluded but the shared items below
    if seed == 0:
        allowed[:] = True  # only shared exclusions: no sparse pairs
    allowed[:, :7] = False  # items no query may have
    below = AllowedBelow(trie, allowed)
    for depth in range(trie.levels + 1):
        n = trie.num_nodes(depth)
        nodes = torch.randint(0, n, (queries, 3, 4), generator=g)
        got = below(depth, nodes)  # [Q, 3, 4]
        for q in range(queries):
            for node in nodes[q].flatten().tolist():
                want = int((allowed[q] & (trie.item_node[depth] == node)).sum())
                assert bool((got[q][nodes[q] == node] == want).all()), (depth, q, node)


def test_full_width_beam_equals_brute_force_ranking() -> None:
    sizes = [3, 4, 2]
    codes = unique_codes(20, sizes, seed=3)
    offsets = [1 + sum(sizes[:t]) for t in range(3)]
    step = _random_step(1 + sum(sizes), seed=5)
    items, scores, _ = constrained_beam_search(step, PrefixTrie(codes, sizes), offsets, 20, 3)
    brute = _brute_force(step, codes + torch.tensor(offsets), 3)  # [Q, I]
    expected = brute.sort(dim=1, descending=True)
    assert torch.equal(items, expected.indices)
    assert torch.allclose(scores, expected.values, atol=1e-5)


def test_full_width_beam_of_the_t5_retriever_equals_brute_force() -> None:
    torch.manual_seed(0)
    sizes, num_items = [4, 3, 2], 18
    codes = unique_codes(num_items, sizes, seed=1)
    features = sid_features(codes, sizes, 16)
    model = GenerativeRetriever(
        features.item_feature,
        features.user_feature,
        features.item_tokens,
        sizes,
        4,
        1,
        2,
        32,
        0.0,
        num_items,
        "cpu",
        "cpu",
    ).eval()
    split = chain_split(5, num_items, 4, seed=2)
    batch = make_sequence_batch(split, features, torch.arange(5), torch.ones(5))
    items, scores, _ = model.generate(batch.sparse_features)
    brute = model.sequence_log_probs(batch.sparse_features, torch.arange(num_items))  # [5, I]
    expected = brute.sort(dim=1, descending=True)
    assert torch.equal(items, expected.indices)
    assert torch.allclose(scores, expected.values, atol=1e-4)


def test_duplicate_tuples_without_collision_level_are_refused() -> None:
    codes = torch.tensor([[0, 1], [2, 0], [0, 1]]).numpy()
    with pytest.raises(DataError, match=r"SID tuple \(0, 1\) is shared by items 'a' and 'c'"):
        check_unique_tuples(codes, ["a", "b", "c"])
    with pytest.raises(DataError, match="unique SID tuples"):
        PrefixTrie(codes, [3, 2])
