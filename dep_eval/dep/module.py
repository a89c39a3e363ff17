"""docs/method.md steps 6-7: the sparse autoencoder and the two aligners, as one small module.

This is everything DEP trains (the LLM stays frozen): a few megabytes. Input is step 5's
``X = [his_1..his_K ; diff_1..diff_K]`` per sample with a mask of present slots; output is
the aligned his and diff vectors, one LLM input embedding per slot, plus the two auxiliary
losses of step 9 (``aux_loss = recon_weight * (recon + kl_weight * kl)``).

Absent slots (cold start, short profiles, see ``embeddings.py``) are masked: they add
nothing to the reconstruction loss or to ``rho_hat``, and their aligned vectors are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dep_eval.dep.config import DEPConfig


@dataclass
class DEPOutput:
    his: torch.Tensor  # (B, K, H) step 7, aligned his codes (zero where absent)
    diff: torch.Tensor  # (B, K, H) step 7, aligned diff codes (zero where absent)
    recon_loss: torch.Tensor  # scalar, step 6 smooth-L1 over present slots
    kl_loss: torch.Tensor  # scalar, step 6 KL sparsity
    aux_loss: torch.Tensor  # scalar, recon_weight * (recon + kl_weight * kl)
    z: torch.Tensor  # (B, 2K, h) sparse codes, for inspection


class SparseAutoEncoder(nn.Module):
    """Step 6: z = GELU(W1 X + b1), x' = GELU(W2 z + b2)."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(d, h)
        self.decoder = nn.Linear(h, d)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.gelu(self.encoder(x))
        return z, F.gelu(self.decoder(z))


class Aligner(nn.Module):
    """Step 7: h -> H -> H with GELU between; maps SAE codes into the LLM's input space."""

    def __init__(self, h: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(h, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(z)))


class DEPModule(nn.Module):
    checkpoint_format = "dep-eval/dep-module"  # see dep_eval.checkpoint
    config_class = DEPConfig

    def __init__(self, config: DEPConfig) -> None:
        super().__init__()
        self.config = config
        self.sae = SparseAutoEncoder(config.encoder_dim, config.sae_dim)
        self.align_his = Aligner(config.sae_dim, config.llm_hidden_size)
        self.align_diff = Aligner(config.sae_dim, config.llm_hidden_size)

    def forward(
        self,
        his: torch.Tensor,
        diff: torch.Tensor,
        his_mask: torch.Tensor | None = None,
        diff_mask: torch.Tensor | None = None,
    ) -> DEPOutput:
        """``his``/``diff``: (B, K, d) from steps 4-5; masks (B, K), True = slot present."""
        batch, k, d = his.shape
        if diff.shape != his.shape:
            raise ValueError(f"his {tuple(his.shape)} and diff {tuple(diff.shape)} differ in shape")
        if d != self.config.encoder_dim:
            raise ValueError(
                f"embeddings are {d}-d but this DEP module expects {self.config.encoder_dim}-d "
                f"({self.config.encoder_name})"
            )
        if his_mask is None:
            his_mask = torch.ones(batch, k, dtype=torch.bool, device=his.device)
        if diff_mask is None:
            diff_mask = torch.ones(batch, k, dtype=torch.bool, device=his.device)
        param = next(self.parameters())

        # Step 5: X = [his ; diff], (B, 2K, d), and which of its 2K tokens are present.
        x = torch.cat([his, diff], dim=1).to(param.dtype)
        mask = torch.cat([his_mask, diff_mask], dim=1).to(param.dtype)  # (B, 2K)

        # Step 6: sparse codes and reconstruction.
        z, x_recon = self.sae(x)

        # Reconstruction: smooth-L1 averaged over the present tokens' elements only.
        per_token = F.smooth_l1_loss(x_recon, x, reduction="none").mean(dim=2)  # (B, 2K)
        n_tokens = mask.sum()
        recon_loss = (per_token * mask).sum() / n_tokens.clamp(min=1)

        # Sparsity: rho_hat = mean activation of each code unit over a sample's present
        # tokens (the reference: over its 2K tokens); KL(rho || rho_hat) averaged over units
        # and over samples that have any token.
        per_sample = mask.sum(dim=1)  # (B,)
        rho_hat = (z * mask.unsqueeze(2)).sum(dim=1) / per_sample.clamp(min=1).unsqueeze(1)
        rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
        rho = self.config.rho
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        has_tokens = (per_sample > 0).to(kl.dtype)
        kl_loss = (kl.mean(dim=1) * has_tokens).sum() / has_tokens.sum().clamp(min=1)

        # Step 7: separate aligners for the his codes and the diff codes; absent slots -> 0
        # so that nothing stray can be injected even if a caller forgets the mask.
        his_out = self.align_his(z[:, :k]) * mask[:, :k].unsqueeze(2)
        diff_out = self.align_diff(z[:, k:]) * mask[:, k:].unsqueeze(2)

        aux_loss = self.config.recon_weight * (recon_loss + self.config.kl_weight * kl_loss)
        return DEPOutput(
            his=his_out,
            diff=diff_out,
            recon_loss=recon_loss,
            kl_loss=kl_loss,
            aux_loss=aux_loss,
            z=z,
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
