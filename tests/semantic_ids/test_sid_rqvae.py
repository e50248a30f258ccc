"""RQ-VAE: training lowers the loss, codes are valid, seeding is reproducible, errors are clear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sid_testdata import clustered_embeddings, one_torch_thread  # noqa: F401 (autouse)

from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.semantic_ids.base import SIDQuantizer
from torchrec_recsys.semantic_ids.collisions import add_collision_level
from torchrec_recsys.semantic_ids.rqvae import RQVAE, TIGER_CONFIG, RQVAEConfig


def small_config(**overrides: object) -> RQVAEConfig:
    values: dict = dict(
        levels=2,
        codebook_size=8,
        latent_dim=8,
        hidden_dims=(32,),
        epochs=25,
        batch_size=64,
        lr=3e-3,
        seed=0,
    )
    values.update(overrides)
    return RQVAEConfig(**values)


@pytest.fixture(scope="module")
def fitted() -> tuple[RQVAE, np.ndarray]:
    x, _ = clustered_embeddings()
    return RQVAE(small_config()).fit(x), x


def test_loss_falls_during_training(fitted: tuple[RQVAE, np.ndarray]) -> None:
    model, _ = fitted
    first, last = model.history[0], model.history[-1]
    assert len(model.history) == model.config.epochs
    assert last.recon_loss < 0.5 * first.recon_loss
    assert last.loss < first.loss


def test_codes_have_shape_dtype_and_range(fitted: tuple[RQVAE, np.ndarray]) -> None:
    model, x = fitted
    codes = model.encode(x)
    assert codes.shape == (x.shape[0], model.levels)
    assert codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < model.codebook_size
    assert isinstance(model, SIDQuantizer)


def test_reconstruction_is_closer_than_a_random_vector(fitted: tuple[RQVAE, np.ndarray]) -> None:
    model, x = fitted
    recon = model.reconstruct(x)
    assert recon.shape == x.shape
    cos = (x * recon).sum(1) / np.linalg.norm(recon, axis=1)
    shuffled = (x * recon[::-1]).sum(1) / np.linalg.norm(recon, axis=1)
    assert cos.mean() > shuffled.mean() + 0.3
    np.testing.assert_allclose(model.decode(model.encode(x)), recon, rtol=1e-5, atol=1e-6)


def test_same_seed_same_codes_and_collision_level_unique(fitted: tuple[RQVAE, np.ndarray]) -> None:
    model, x = fitted
    again = RQVAE(small_config()).fit(x)
    np.testing.assert_array_equal(model.encode(x), again.encode(x))
    sids = add_collision_level(model.encode(x)).codes
    assert len(np.unique(sids, axis=0)) == x.shape[0]
    np.testing.assert_array_equal(sids, add_collision_level(again.encode(x)).codes)


def test_dead_code_reset_revives_unused_codes() -> None:
    x, _ = clustered_embeddings()
    cfg = dict(codebook_size=16, epochs=15, kmeans_init=False)  # random init: many dead codes
    without = RQVAE(small_config(dead_code_reset=False, **cfg)).fit(x)
    with_reset = RQVAE(small_config(dead_code_reset=True, **cfg)).fit(x)
    used_without = sum(len(np.unique(c)) for c in without.encode(x).T)
    used_with = sum(len(np.unique(c)) for c in with_reset.encode(x).T)
    assert sum(h.dead_codes_reset for h in with_reset.history) > 0
    assert sum(h.dead_codes_reset for h in without.history) == 0
    assert used_with > used_without


def test_codebook_larger_than_catalogue_names_both_numbers() -> None:
    x, _ = clustered_embeddings(n=40)
    with pytest.raises(DataError, match=r"codebook size 64 .* number of items 40"):
        RQVAE(small_config(codebook_size=64)).fit(x)


def test_input_width_is_checked() -> None:
    x, _ = clustered_embeddings(n=300, dim=16)
    with pytest.raises(DataError, match="768"):
        RQVAE(RQVAEConfig.tiger()).fit(x)
    model = RQVAE(small_config(epochs=1)).fit(x)
    with pytest.raises(DataError, match="width 12"):
        model.encode(x[:, :12])


def test_unfitted_and_bad_config_fail_clearly() -> None:
    with pytest.raises(DataError, match="not been fitted"):
        RQVAE(small_config()).encode(np.zeros((2, 16), np.float32))
    with pytest.raises(ConfigError, match="levels = 0"):
        RQVAEConfig(levels=0)
    with pytest.raises(ConfigError, match="optimizer = 'sgd'"):
        RQVAEConfig(optimizer="sgd")
    with pytest.raises(DataError, match="NaN"):
        RQVAE(small_config()).fit(np.full((20, 4), np.nan, np.float32))


def test_tiger_setting_and_config_round_trip() -> None:
    tiger = RQVAEConfig.tiger()
    assert tiger == TIGER_CONFIG
    assert (tiger.levels, tiger.codebook_size, tiger.latent_dim, tiger.input_dim) == (
        3,
        256,
        32,
        768,
    )
    assert RQVAEConfig.from_dict(tiger.to_dict()) == tiger
    with pytest.raises(ConfigError, match="unknown RQVAEConfig key"):
        RQVAEConfig.from_dict({"levls": 3})


def test_fit_uses_its_thread_count_and_restores_the_process_setting() -> None:
    x, _ = clustered_embeddings(n=40)
    torch.set_num_threads(2)
    seen: list[int] = []
    model = RQVAE(small_config(epochs=1, num_threads=1))
    original = model._fit
    model._fit = lambda emb: (seen.append(torch.get_num_threads()), original(emb))[1]
    model.fit(x)
    assert seen == [1] and torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match="num_threads = 0"):
        RQVAEConfig(num_threads=0)


def test_fit_stops_at_max_steps_mid_epoch() -> None:
    """Big catalogues are fitted by steps: the last, partial epoch is recorded."""
    x, _ = clustered_embeddings()  # batch 64 -> several steps per epoch
    steps_per_epoch = -(-x.shape[0] // 64)
    model = RQVAE(small_config(max_steps=steps_per_epoch + 1, show_progress=True)).fit(x)
    assert len(model.history) == 2
    assert model.encode(x).shape == (x.shape[0], 2)


def test_fit_progress_without_a_terminal_is_plain_lines(capsys: pytest.CaptureFixture) -> None:
    """Under torchx or a pipe the fit writes a few whole lines, never a bar's carriage returns."""
    x, _ = clustered_embeddings()
    steps_per_epoch = -(-x.shape[0] // 64)
    RQVAE(small_config(max_steps=3 * steps_per_epoch, show_progress=True)).fit(x)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and 1 <= len(lines) <= 11
    assert lines[-1].startswith(f"RQ-VAE fit: {3 * steps_per_epoch}/{3 * steps_per_epoch} steps")
    assert "loss=" in lines[-1]


def test_negative_step_or_time_limit_is_rejected() -> None:
    with pytest.raises(ConfigError, match="max_steps = -1"):
        small_config(max_steps=-1)


def test_kmeans_init_uses_every_code_on_clustered_data() -> None:
    x, _ = clustered_embeddings(clusters=8)
    cfg = dict(codebook_size=8, epochs=1, dead_code_reset=False, lr=1e-6)  # ~ the init
    codes = RQVAE(small_config(kmeans_init=True, **cfg)).fit(x).encode(x)  # [N, L]
    assert [len(np.unique(c)) for c in codes.T] == [8, 8]
    random = RQVAE(small_config(kmeans_init=False, **cfg)).fit(x).encode(x)
    assert sum(len(np.unique(c)) for c in random.T) < 16  # random codebooks leave codes dead


def test_dead_code_reset_revives_a_forced_dead_code() -> None:
    x, _ = clustered_embeddings(clusters=8)
    model = RQVAE(small_config(codebook_size=8, epochs=2)).fit(x)
    module = model.module
    assert module is not None
    module.codebooks.data[0, 3] = 1e3  # far from every residual: code (level 0, 3) is dead
    assert 3 not in np.unique(model.encode(x)[:, 0])
    usage = torch.ones(2, 8, dtype=torch.int64)
    usage[0, 3] = 0
    optimizer = torch.optim.Adam(module.parameters())
    reset = model._reset_dead_codes(
        module, torch.from_numpy(x), usage, optimizer, torch.Generator()
    )
    assert reset == 1
    assert float(module.codebooks.data[0, 3].abs().max()) < 1e2  # re-seeded on a residual
    assert 3 in np.unique(model.encode(x)[:, 0])
