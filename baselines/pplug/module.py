"""What PPlug trains: the projector and the instruction vector (steps 2-4)."""

from __future__ import annotations

import torch
from torch import nn

from .config import PPlugModuleConfig


class PPlugModule(nn.Module):
    """What PPlug trains: the projector (d -> H -> H) and the instruction vector (H)."""

    checkpoint_format = "dep-eval/pplug-module"
    config_class = PPlugModuleConfig

    def __init__(self, config: PPlugModuleConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.llm_hidden_size
        self.projector = nn.Sequential(
            nn.Linear(config.encoder_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.instruction = nn.Parameter(torch.zeros(hidden))

    def forward(
        self, history: torch.Tensor, history_mask: torch.Tensor, query: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``history`` (B, N, d) past-review embeddings, ``history_mask`` (B, N) True where
        present, ``query`` (B, d) target-item embeddings -> instruction and persona (B, H)."""
        param = self.instruction
        history, query = history.to(param.dtype), query.to(param.dtype)
        scores = torch.einsum("bnd,bd->bn", history, query)
        scores = scores.masked_fill(~history_mask, float("-inf"))
        # an empty profile has no weights (softmax of all -inf is NaN): its persona is zero
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        persona = torch.einsum("bn,bnh->bh", weights, self.projector(history))
        return self.instruction.expand_as(persona), persona
