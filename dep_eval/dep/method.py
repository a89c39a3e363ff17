"""DEP as a personalization method: METHOD.md steps 1-8 and 10 at inference.

Per document: steps 1-5 (``DifferenceEmbedder``: his and diff embeddings of up to K past
reviews), steps 6-7 (``DEPModule``: SAE codes, then the his and diff aligners into the LLM's
hidden size), step 8 (the prompt: each shown past review carries a his slot and a diff slot,
each one placeholder token between start/end markers, whose input embeddings are the
aligned codes). The LLM stays frozen; the trainer (``dep_eval.train``) uses ``DEP.prompts``
and ``DEP.soft_vectors`` so that training and inference build exactly the same inputs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.dep.checkpoint import identity_fields, load_checkpoint
from dep_eval.dep.embeddings import DEPInputs, DifferenceEmbedder
from dep_eval.dep.module import DEPConfig, DEPModule, DEPOutput
from dep_eval.engine import EMBEDDED_LLM, Engine, Prompt
from dep_eval.methods.base import MethodConfig, PersonalizationMethod, TrainingBatch
from dep_eval.methods.lm_eval_model import lm_eval_model_for
from dep_eval.prompts import SYSTEM, fit_prompt, review_messages

if TYPE_CHECKING:
    from dep_eval.train.trainer import TrainConfig

logger = logging.getLogger(__name__)

SYSTEM_WITH_SLOTS = SYSTEM + (
    " Each past review may carry two embedding hints: <his> encodes that review, <diff> "
    "encodes how it differs from other users' reviews of the same product. Use them as hints "
    "about the user's style and preferences."
)
# The four markers' input embeddings (frozen, derived, not trained): the mean token embedding
# of these texts, in the order of DEPConfig.soft_tokens["markers"] (his start/end, diff start/end)
MARKER_TEXTS = (" <his>", " </his>", " <diff>", " </diff>")


SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "dep-smollm2-minilm"


def load_for_inference(config: DEPConfigArgs, llm: Engine) -> DEPModule:
    """The DEP module a run asked for, checked against the LLM and encoder it will meet."""
    folder = config.checkpoint
    if (
        folder is None
        and llm.name == EMBEDDED_LLM
        and (SHIPPED_CHECKPOINT / "config.json").exists()
    ):
        folder = str(SHIPPED_CHECKPOINT)
    if folder is None:
        if config.allow_untrained:
            logger.warning(
                "!!! DEP is running with a RANDOMLY INITIALISED module (allow_untrained=true). "
                "Its scores mean nothing; this switch exists for tests only. !!!"
            )
            module_config = DEPConfig(llm_name=llm.name, llm_hidden_size=llm.hidden_size)
            if config.encoder:
                from dep_eval.dep.encoder import CachedEncoder

                encoder = CachedEncoder(config.encoder)
                module_config = DEPConfig(
                    encoder_name=encoder.name,
                    encoder_dim=encoder.dim,
                    llm_name=llm.name,
                    llm_hidden_size=llm.hidden_size,
                )
            torch.manual_seed(0)
            return DEPModule(module_config).to(llm.device)
        raise ValueError(
            f"--model dep needs a DEP checkpoint for {llm.name}: pass "
            "--model_args checkpoint=PATH. Train one with `dep-eval train --data-dir DIR "
            "--category CAT --output runs/NAME` (its best epoch lands in runs/NAME/best); "
            "the checkpoint shipped with dep-eval fits only the embedded SmolLM2-135M-Instruct."
        )
    return load_checkpoint(
        folder,
        encoder_name=config.encoder,
        llm_name=llm.name,
        llm_hidden_size=llm.hidden_size,
        device=llm.device,
    )


@dataclasses.dataclass
class DEPConfigArgs(MethodConfig):
    """``--model_args`` of ``--model dep`` (the checkpoint's own config holds the rest)."""

    checkpoint: str | None = None
    encoder: str | None = None  # default: the one the checkpoint was trained with
    k: int = 8  # past reviews with slots, 0..K of the checkpoint; 0 = non-personalized
    use_his: bool = True
    use_diff: bool = True
    with_text: bool = True  # past review texts in the prompt, or only their slots
    align_slots: bool = True  # False reproduces the reference's slot/text mismatch
    max_prompt_tokens: int = 3072
    allow_untrained: bool = False  # tests only: a randomly initialised DEP module


class DEP(PersonalizationMethod):
    name = "dep"
    Config = DEPConfigArgs
    config: DEPConfigArgs

    def __init__(self, config: DEPConfigArgs, llm: Engine, module: torch.nn.Module | None = None):
        super().__init__(config, llm)
        self.module = load_for_inference(config, llm) if module is None else module
        self.module_config: DEPConfig = self.module.config
        k_max = self.module_config.k
        if not 0 <= config.k <= k_max:
            raise ValueError(f"k={config.k} is outside 0..{k_max}, the K of this checkpoint")
        # token names come from the checkpoint (the reference's by default): K his and K diff
        # placeholders, whose embeddings the aligned codes replace, and four markers
        tokens = self.module_config.soft_tokens
        self.his_tokens, self.diff_tokens = tokens["his"], tokens["diff"]
        self.markers = tokens["markers"]
        llm.add_placeholder_tokens([*self.his_tokens, *self.diff_tokens])
        llm.add_fixed_tokens(
            {
                name: llm.text_embedding(text)
                for name, text in zip(self.markers, MARKER_TEXTS, strict=True)
            }
        )
        self.embedders: dict[tuple[str, str], DifferenceEmbedder] = {}
        self.encoder = None

    @classmethod
    def for_training(cls, config: TrainConfig, llm: Engine) -> DEP:
        """DEP around a fresh module, for ``dep_eval.train``."""
        from dep_eval.dep.encoder import CachedEncoder

        encoder = CachedEncoder(config.encoder)
        module = DEPModule(
            DEPConfig(**identity_fields(encoder, llm), sae_dim=config.sae_dim, k=config.k)
        ).to(llm.device)
        args = DEPConfigArgs(
            k=config.k,
            with_text=config.with_text,
            align_slots=config.align_slots,
            max_prompt_tokens=config.max_length,
        )
        method = cls(args, llm, module=module)
        method.encoder = encoder
        return method

    def training_batch(self, samples: Sequence[Sample], pool: DataPool) -> TrainingBatch:
        """Step 9's inputs: the prompts (slots carry gradients) and 100 * (recon + 1e-3 KL)."""
        inputs = self.dep_inputs(samples)
        out = self.codes(inputs)
        return TrainingBatch(
            prompts=self.prompts(samples, pool, inputs, out.his, out.diff),
            aux_loss=out.aux_loss,
            logs={"reconstruction": out.recon_loss, "kl": out.kl_loss},
        )

    def setup(self, pool: DataPool) -> None:
        from dep_eval.dep.encoder import CachedEncoder

        if self.encoder is None:
            self.encoder = CachedEncoder(self.config.encoder or self.module_config.encoder_name)
        self.embedders[pool.category] = DifferenceEmbedder(
            self.encoder,
            pool,
            k=self.module_config.k,
            align_slots=self.config.align_slots,
            cold_start=self.module_config.cold_start,
            weighting=self.module_config.weighting,
        )

    # -- steps 1-5 and 6-7 ------------------------------------------------------------

    def dep_inputs(self, samples: Sequence[Sample]) -> DEPInputs:
        return self.embedders[samples[0].category](samples)

    def codes(self, inputs: DEPInputs) -> DEPOutput:
        """Steps 6-7: aligned his and diff vectors (B, K, H) plus the SAE's losses."""
        return self.module(inputs.his, inputs.diff, inputs.his_mask, inputs.diff_mask)

    # -- step 8 --------------------------------------------------------------------------

    def prompts(
        self,
        samples: Sequence[Sample],
        pool: DataPool,
        inputs: DEPInputs,
        his: torch.Tensor,
        diff: torch.Tensor,
    ) -> list[Prompt]:
        return [
            self._prompt(sample, pool, inputs, b, his[b], diff[b])
            for b, sample in enumerate(samples)
        ]

    def _prompt(
        self,
        sample: Sample,
        pool: DataPool,
        inputs: DEPInputs,
        b: int,
        his: torch.Tensor,
        diff: torch.Tensor,
    ) -> Prompt:
        k = self.config.k
        shown = inputs.shown[b][:k]
        slot_review = inputs.slot_review[b].tolist()
        his_ok = inputs.his_mask[b].tolist()
        diff_ok = inputs.diff_mask[b].tolist()
        his_start, his_end, diff_start, diff_end = self.markers

        def build(n: int) -> Prompt:
            past = [sample.profile[j] for j in shown[:n]]
            slots, vectors = [], []
            for i in range(n):
                parts = []
                if i < k and slot_review[i] >= 0:
                    if self.config.use_his and his_ok[i]:
                        parts.append(f"{his_start}{self.his_tokens[i]}{his_end}")
                        vectors.append(his[i])
                    if self.config.use_diff and diff_ok[i]:
                        parts.append(f"{diff_start}{self.diff_tokens[i]}{diff_end}")
                        vectors.append(diff[i])
                slots.append("Hints: " + " ".join(parts) if parts else "")
            messages = review_messages(
                sample,
                pool,
                past,
                slots,
                system=SYSTEM_WITH_SLOTS if vectors else SYSTEM,
                with_text=self.config.with_text,
            )
            return Prompt(messages, torch.stack(vectors) if vectors else None)

        return fit_prompt(self.llm, build, len(shown), self.config.max_prompt_tokens)

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        inputs = self.dep_inputs([sample])
        with torch.no_grad():
            out = self.codes(inputs)
        return self.prompts([sample], pool, inputs, out.his, out.diff)[0]


DEPLM = lm_eval_model_for(DEP)
