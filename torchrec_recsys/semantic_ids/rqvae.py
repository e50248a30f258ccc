"""RQ-VAE: learn L residual codebooks over item embeddings (TIGER, Rajput et al. 2023).

::

    x [N, D_in] --MLP encoder--> z [N, D_lat]
      r_1 = z;  c_l = argmin_k ||r_l - C_l[k]||;  e_l = C_l[c_l];  r_{l+1} = r_l - e_l
      z_q = sum_l e_l;  straight-through: z + sg(z_q - z) --MLP decoder--> x_hat [N, D_in]

    loss = ||x - x_hat||^2 + sum_l ( ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2 )

Codebooks start from k-means (faiss) on the untrained encoder's residuals over the whole
training set, level by level. After every epoch, codes no batch used in that epoch ("dead"
codes) are re-seeded with randomly chosen current residuals of that level, so the codebooks do
not collapse onto a few codes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.observability.progress import Progress
from torchrec_recsys.semantic_ids.base import as_embeddings, check_levels
from torchrec_recsys.semantic_ids.kmeans import kmeans

OPTIMIZERS = ("adam", "adagrad")
_RESET_SAMPLE = 65_536  # residual rows drawn for dead-code re-seeding on huge catalogues
_ENCODE_BATCH = 8_192


@dataclass
class RQVAEConfig:
    """Sizes and training schedule of the RQ-VAE; defaults suit ~1.7k items (MovieLens-100K)."""

    levels: int = 3
    """Residual levels L: codes per item before any collision level."""
    codebook_size: int = 64
    """Codes per level K; 64^3 = 262k tuples for 1,682 items keeps collisions rare."""
    latent_dim: int = 32
    """Width of the latent z and of every codeword."""
    hidden_dims: tuple[int, ...] = (256, 128)
    """Hidden widths of the MLP encoder (the decoder mirrors them)."""
    epochs: int = 300
    """Passes over the items (300 x 7 steps for 1,682 items: ~10 s on 2 CPU cores)."""
    max_steps: int = 0
    """Stop after this many optimizer steps in all (0 = no limit; ``epochs`` still applies).
    Large catalogues are fitted by steps: 150k items are 586 steps per epoch at batch 256."""
    max_seconds: float = 0.0
    """Stop at the first step past this many seconds of fitting (0 = no limit)."""
    show_progress: bool = False
    """Show progress over the fit's steps (a bar on a terminal, lines without one)."""
    lr: float = 1e-3
    """Learning rate of the optimizer."""
    batch_size: int = 256
    """Items per training step."""
    beta: float = 0.25
    """Commitment weight: pulls residuals toward their codewords (VQ-VAE's beta)."""
    seed: int = 0
    """Seeds weight init, shuffling, k-means and dead-code re-seeding."""
    optimizer: str = "adam"
    """``adam`` or ``adagrad`` (TIGER used Adagrad with lr 0.4)."""
    kmeans_init: bool = True
    """Initialise each level's codebook by k-means on the untrained encoder's residuals."""
    kmeans_iters: int = 20
    """Lloyd iterations of each initial k-means."""
    dead_code_reset: bool = True
    """Re-seed codes unused during an epoch from that level's current residuals."""
    input_dim: int | None = None
    """Expected embedding width; None takes it from the data, a number is checked against it."""
    device: str = "cpu"
    """Torch device to train on (``cpu`` or ``cuda``)."""
    num_threads: int | None = 1
    """Torch intra-op threads while fitting (restored afterwards); None keeps the process
    setting. One thread is fastest for these tiny MLPs: on a shared 2-core box, 2 threads
    were seen 5x slower than 1 (OpenMP threads waiting on a busy core)."""

    def __post_init__(self) -> None:
        check_levels(self.levels, self.codebook_size)
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer = {self.optimizer!r} is invalid; "
                f"expected one of {', '.join(OPTIMIZERS)}"
            )
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads = {self.num_threads} is invalid; expected >= 1 or None")
        for name in ("latent_dim", "epochs", "batch_size", "kmeans_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)} is invalid; expected >= 1")
        if self.max_steps < 0 or self.max_seconds < 0:
            raise ConfigError(
                f"max_steps = {self.max_steps}, max_seconds = {self.max_seconds}; "
                f"expected >= 0 (0 = no limit)"
            )
        if self.lr <= 0 or self.beta < 0:
            raise ConfigError(f"lr = {self.lr}, beta = {self.beta}; expected lr > 0, beta >= 0")

    @classmethod
    def tiger(cls) -> RQVAEConfig:
        """TIGER's setting: 768-d Sentence-T5 input, encoder 512-256-128, latent 32,
        3 levels x 256 codes, beta 0.25, Adagrad lr 0.4, batch 1024, 20k epochs.

        TIGER appends a 4th "collision" level (see :mod:`.collisions`) to make SIDs unique.
        """
        return cls(
            levels=3,
            codebook_size=256,
            latent_dim=32,
            hidden_dims=(512, 256, 128),
            epochs=20_000,
            lr=0.4,
            batch_size=1024,
            beta=0.25,
            optimizer="adagrad",
            input_dim=768,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RQVAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown RQVAEConfig key(s) {unknown}; expected some of {sorted(names)}"
            )
        return cls(**values)


TIGER_CONFIG = RQVAEConfig.tiger()
"""TIGER's RQ-VAE setting (use with a collision level; 768-d input)."""


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def nearest_code(residual: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword (squared L2) per row: [B, D], [K, D] -> [B] int64."""
    distances = (
        residual.pow(2).sum(-1, keepdim=True)  # [B, 1]
        - 2.0 * residual @ codebook.T  # [B, K]
        + codebook.pow(2).sum(-1)  # [K]
    )  # [B, K]
    return distances.argmin(dim=-1)


@dataclass
class RQVAEOutput:
    """One forward pass."""

    reconstruction: torch.Tensor
    """x_hat [B, D_in]."""
    codes: torch.Tensor
    """[B, L] int64."""
    recon_loss: torch.Tensor
    """Mean over the batch of ||x - x_hat||^2 (scalar)."""
    quant_loss: torch.Tensor
    """Codebook + beta * commitment loss summed over levels (scalar)."""

    @property
    def loss(self) -> torch.Tensor:
        """Total training loss (scalar)."""
        return self.recon_loss + self.quant_loss


class RQVAEModule(nn.Module):
    """The network: MLP encoder, residual codebooks [L, K, D_lat], MLP decoder."""

    def __init__(self, input_dim: int, config: RQVAEConfig) -> None:
        super().__init__()
        widths = [input_dim, *config.hidden_dims, config.latent_dim]
        self.encoder = _mlp(widths)
        self.decoder = _mlp(widths[::-1])
        self.codebooks = nn.Parameter(
            0.1 * torch.randn(config.levels, config.codebook_size, config.latent_dim)
        )  # [L, K, D_lat]
        self.beta = config.beta

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual quantization of latents z [B, D_lat].

        Returns:
            z_q [B, D_lat] (sum of chosen codewords, gradients reach the codebooks),
            codes [B, L] int64, and the codebook + commitment loss (scalar).
        """
        residual = z  # [B, D_lat]
        z_q = torch.zeros_like(z)  # [B, D_lat]
        codes = []
        quant_loss = z.new_zeros(())
        for level in range(self.codebooks.shape[0]):
            codebook = self.codebooks[level]  # [K, D_lat]
            code = nearest_code(residual.detach(), codebook.detach())  # [B]
            chosen = codebook[code]  # [B, D_lat]
            codebook_term = (residual.detach() - chosen).pow(2).sum(-1).mean()
            commit_term = (residual - chosen.detach()).pow(2).sum(-1).mean()
            quant_loss = quant_loss + codebook_term + self.beta * commit_term
            z_q = z_q + chosen
            residual = residual - chosen.detach()
            codes.append(code)
        return z_q, torch.stack(codes, dim=1), quant_loss  # [B, D_lat], [B, L], []

    def residuals(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Residual entering each level: L tensors [B, D_lat] (no gradients needed)."""
        out = [z]
        for level in range(self.codebooks.shape[0] - 1):
            codebook = self.codebooks[level]  # [K, D_lat]
            out.append(out[-1] - codebook[nearest_code(out[-1], codebook)])
        return out

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        """x [B, D_in] -> reconstruction, codes and losses."""
        z = self.encoder(x)  # [B, D_lat]
        z_q, codes, quant_loss = self.quantize(z)
        z_st = z + (z_q - z).detach()  # straight-through estimator, [B, D_lat]
        x_hat = self.decoder(z_st)  # [B, D_in]
        recon_loss = (x_hat - x).pow(2).sum(-1).mean()
        return RQVAEOutput(x_hat, codes, recon_loss, quant_loss)


@dataclass
class EpochStats:
    """Training record of one epoch (means over its batches)."""

    epoch: int
    loss: float
    recon_loss: float
    quant_loss: float
    dead_codes_reset: int
    """Codes re-seeded after this epoch, summed over levels."""


class RQVAE:
    """Estimator around :class:`RQVAEModule`: ``fit``, ``encode``, ``reconstruct``.

    Example::

        sid = RQVAE(RQVAEConfig(levels=3, codebook_size=64)).fit(embeddings)  # [N, D]
        codes = sid.encode(embeddings)  # [N, 3] int64
    """

    def __init__(self, config: RQVAEConfig | None = None) -> None:
        self.config = config if config is not None else RQVAEConfig()
        self.module: RQVAEModule | None = None
        self.input_dim: int | None = None
        self.history: list[EpochStats] = []

    @property
    def levels(self) -> int:
        """Residual levels L."""
        return self.config.levels

    @property
    def codebook_size(self) -> int:
        """Codes per level K."""
        return self.config.codebook_size

    # -- training ----------------------------------------------------------------------------

    def _build(self, input_dim: int) -> RQVAEModule:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            module = RQVAEModule(input_dim, self.config)
        return module.to(self.config.device)

    @torch.no_grad()
    def _kmeans_init(self, module: RQVAEModule, x: torch.Tensor) -> None:
        """Set each codebook to k-means centroids of that level's residuals over all of x."""
        residual = module.encoder(x).cpu().numpy()  # [N, D_lat]
        for level in range(self.config.levels):
            centroids, assign = kmeans(
                residual,
                self.config.codebook_size,
                iters=self.config.kmeans_iters,
                seed=self.config.seed + level,
            )  # [K, D_lat], [N]
            module.codebooks.data[level] = torch.from_numpy(centroids).to(module.codebooks)
            residual = residual - centroids[assign]  # [N, D_lat]

    @torch.no_grad()
    def _reset_dead_codes(
        self,
        module: RQVAEModule,
        x: torch.Tensor,
        usage: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> int:
        """Re-seed codes with zero usage [L, K] from current residuals; returns how many."""
        if bool((usage > 0).all()):
            return 0
        if x.shape[0] > _RESET_SAMPLE:
            x = x[torch.randperm(x.shape[0], generator=generator)[:_RESET_SAMPLE].to(x.device)]
        residual = module.encoder(x)  # [N, D_lat]
        total = 0
        for level in range(self.config.levels):
            codebook = module.codebooks.data[level]  # [K, D_lat]
            dead = (usage[level] == 0).nonzero().flatten().to(codebook.device)  # [n_dead]
            if dead.numel():
                n = residual.shape[0]
                pick = torch.randperm(n, generator=generator)[: dead.numel()]
                if pick.numel() < dead.numel():  # fewer rows than dead codes: draw with repeats
                    pick = torch.randint(n, (dead.numel(),), generator=generator)
                codebook[dead] = residual[pick.to(residual.device)]
                for state in optimizer.state.get(module.codebooks, {}).values():
                    if torch.is_tensor(state) and state.shape == module.codebooks.shape:
                        state[level, dead] = 0  # forget the stale moments of re-seeded rows
                total += dead.numel()
            residual = residual - codebook[nearest_code(residual, codebook)]  # [N, D_lat]
        return total

    def fit(self, embeddings: np.ndarray) -> Self:
        """Train on ``embeddings`` [N, D_in]; returns ``self`` (history in :attr:`history`).

        Raises:
            DataError: ``codebook_size`` exceeds the number of items (both numbers named), the
                input width differs from ``config.input_dim``, or the matrix is malformed.
        """
        before = torch.get_num_threads()
        if self.config.num_threads is not None:
            torch.set_num_threads(self.config.num_threads)
        try:
            return self._fit(embeddings)
        finally:
            torch.set_num_threads(before)

    def _fit(self, embeddings: np.ndarray) -> Self:
        cfg = self.config
        array = as_embeddings(embeddings, cfg.codebook_size)  # [N, D_in]
        if cfg.input_dim is not None and array.shape[1] != cfg.input_dim:
            raise DataError(
                f"embeddings have width {array.shape[1]}; the RQ-VAE config expects "
                f"input_dim = {cfg.input_dim}"
            )
        self.input_dim = array.shape[1]
        module = self._build(self.input_dim)
        x = torch.from_numpy(array).to(cfg.device)  # [N, D_in]
        generator = torch.Generator().manual_seed(cfg.seed)
        if cfg.kmeans_init:
            self._kmeans_init(module, x)
        if cfg.optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
        else:
            optimizer = torch.optim.Adagrad(module.parameters(), lr=cfg.lr)
        self.history = []
        n = x.shape[0]
        steps_per_epoch = math.ceil(n / cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        total = min(total, cfg.max_steps) if cfg.max_steps else total
        deadline = time.perf_counter() + cfg.max_seconds if cfg.max_seconds else math.inf
        bar = Progress(total=total, desc="RQ-VAE fit", enabled=cfg.show_progress)
        steps, stop = 0, False
        for epoch in range(cfg.epochs):
            module.train()
            usage = torch.zeros(cfg.levels, cfg.codebook_size, dtype=torch.int64)  # [L, K]
            sums = torch.zeros(3)  # loss, recon, quant (weighted by batch size)
            seen = 0
            order = torch.randperm(n, generator=generator).to(cfg.device)  # [N]
            for start in range(0, n, cfg.batch_size):
                batch = x[order[start : start + cfg.batch_size]]  # [B, D_in]
                out = module(batch)
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                codes = out.codes.cpu()  # [B, L]
                for level in range(cfg.levels):
                    usage[level] += torch.bincount(codes[:, level], minlength=cfg.codebook_size)
                parts = torch.stack([out.loss, out.recon_loss, out.quant_loss]).detach().cpu()
                sums += parts * batch.shape[0]
                seen += batch.shape[0]
                steps += 1
                bar.update()
                if (cfg.max_steps and steps >= cfg.max_steps) or time.perf_counter() >= deadline:
                    stop = True
                    break
            reset = 0
            if cfg.dead_code_reset and not stop:
                module.eval()
                reset = self._reset_dead_codes(module, x, usage, optimizer, generator)
            mean = (sums / max(seen, 1)).tolist()
            self.history.append(EpochStats(epoch, mean[0], mean[1], mean[2], reset))
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean[0]:.4f}")
            if stop:
                break
        bar.close()
        module.eval()
        self.module = module
        return self

    # -- inference ---------------------------------------------------------------------------

    def _require(self) -> RQVAEModule:
        if self.module is None:
            raise DataError("this RQVAE has not been fitted; call fit(embeddings) first")
        return self.module

    @torch.no_grad()
    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes [N, L] int64 in ``[0, K)`` for embeddings [N, D_in]."""
        module = self._require()
        array = self._check_width(as_embeddings(embeddings))  # [N, D_in]
        out = []
        for start in range(0, array.shape[0], _ENCODE_BATCH):
            x = torch.from_numpy(array[start : start + _ENCODE_BATCH]).to(self.config.device)
            _, codes, _ = module.quantize(module.encoder(x))  # [B, L]
            out.append(codes.cpu())
        return torch.cat(out).numpy().astype(np.int64)

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Embeddings [N, D_in] float32 decoded from codes [N, l] (l <= L leading levels)."""
        module = self._require()
        codes_t = torch.as_tensor(np.asarray(codes, dtype=np.int64))  # [N, l]
        if codes_t.ndim != 2 or codes_t.shape[1] > self.levels:
            raise DataError(
                f"codes have shape {tuple(codes_t.shape)}; expected [items, <= {self.levels}]"
            )
        codebooks = module.codebooks  # [L, K, D_lat]
        z_q = torch.zeros(codes_t.shape[0], codebooks.shape[-1], device=codebooks.device)
        for level in range(codes_t.shape[1]):
            z_q += codebooks[level][codes_t[:, level].to(codebooks.device)]  # [N, D_lat]
        return module.decoder(z_q).cpu().numpy()

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray:
        """Encode then decode: embeddings [N, D_in] -> reconstructions [N, D_in] float32."""
        return self.decode(self.encode(embeddings))

    def codebooks(self) -> np.ndarray:
        """Codebooks [L, K, D_lat] float32 (latent space)."""
        return self._require().codebooks.detach().cpu().numpy().copy()

    def _check_width(self, array: np.ndarray) -> np.ndarray:
        if array.shape[1] != self.input_dim:
            raise DataError(
                f"embeddings have width {array.shape[1]}; this RQ-VAE was fitted on "
                f"width {self.input_dim}"
            )
        return array

    # -- persistence -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Network weights (CPU tensors) for :mod:`.store`."""
        return {k: v.detach().cpu().contiguous() for k, v in self._require().state_dict().items()}

    @classmethod
    def from_state(
        cls, config: RQVAEConfig, input_dim: int, state: dict[str, torch.Tensor]
    ) -> RQVAE:
        """Rebuild a fitted RQ-VAE from its config, input width and :meth:`state_dict`."""
        model = cls(config)
        model.input_dim = input_dim
        module = model._build(input_dim)
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise DataError(
                f"RQ-VAE weights do not match the config: {str(e).splitlines()[0]}"
            ) from None
        module.eval()
        model.module = module
        return model


__all__ = [
    "EpochStats",
    "RQVAE",
    "RQVAEConfig",
    "RQVAEModule",
    "RQVAEOutput",
    "TIGER_CONFIG",
    "nearest_code",
]
