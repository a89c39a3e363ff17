"""DEP as a personalization method: steps 1-8 and 10 of docs/method.md at inference.

Per document: steps 1-5 (``DifferenceEmbedder``: his and diff embeddings of up to K past
reviews), steps 6-7 (``DEPModule``: SAE codes, then the his and diff aligners into the LLM's
hidden size), step 8 (the prompt: each shown past review carries a his slot and a diff slot,
each one placeholder token between start/end markers, whose input embeddings are the
aligned codes). The LLM stays frozen; for training (step 9), ``training_batch`` builds the
same prompts with the slot vectors still attached to the module's graph.

DEP + LoRA (``dep-eval train --lora-r R``, beyond the paper): a LoRA of the LLM trains with
the module; the checkpoint carries it in ``adapter/`` and ``trained_adapter`` hands it to the
engine, which merges it into the LLM (as ``peft=``) before anything runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from dep_eval.checkpoint import Checkpoint, identity_fields
from dep_eval.data.longlamp import items_with_peers
from dep_eval.data.pool import DataPool
from dep_eval.data.records import Sample
from dep_eval.dep.config import DEPArgs, DEPConfig, DEPTrainArgs
from dep_eval.dep.embeddings import DEPInputs, DifferenceEmbedder
from dep_eval.dep.module import DEPModule, DEPOutput
from dep_eval.encoder import CachedEncoder
from dep_eval.engine import Engine, Prompt
from dep_eval.methods.base import TrainableMethod, TrainingBatch
from dep_eval.prompts import SYSTEM, fit_prompt, review_messages
from dep_eval.registry import Sweep, Variant, register_method
from dep_eval.report import slices

logger = logging.getLogger(__name__)

SYSTEM_WITH_SLOTS = SYSTEM + (
    " Each past review may carry two embedding hints: <his> encodes that review, <diff> "
    "encodes how it differs from other users' reviews of the same product. Use them as hints "
    "about the user's style and preferences."
)
# The four markers' input embeddings (frozen, derived, not trained): the mean token embedding
# of these texts, in the order of DEPConfig.soft_tokens["markers"] (his start/end, diff start/end)
MARKER_TEXTS = (" <his>", " </his>", " <diff>", " </diff>")


SHIPPED_CHECKPOINT = "dep-smollm2-minilm"  # under dep_eval/checkpoints/
SYSTEM_VERSION = 1  # recorded in checkpoints; bump when SYSTEM or SYSTEM_WITH_SLOTS changes


def prompt_settings(args: DEPArgs, module_config: DEPConfig) -> DEPArgs:
    """``args`` with k, with_text, with_items and align_slots filled from the checkpoint's
    training prompt.

    An explicit value that differs from what the checkpoint was trained with is honoured,
    with a warning: scores of a prompt the module never saw are easy to misread.
    """
    trained = module_config.trained_prompt
    values = {}
    defaults = (
        ("k", module_config.k),
        ("with_text", True),
        ("with_items", True),
        ("align_slots", True),
    )
    for name, fallback in defaults:
        asked, recorded = getattr(args, name), trained.get(name)
        values[name] = asked if asked is not None else (fallback if recorded is None else recorded)
        if asked is not None and recorded is not None and asked != recorded:
            logger.warning(
                "this checkpoint was trained with %s=%s; running with %s=%s as asked",
                name,
                str(recorded).lower(),
                name,
                str(asked).lower(),
            )
    version = trained.get("system", SYSTEM_VERSION)
    if version != SYSTEM_VERSION:
        logger.warning(
            "this checkpoint was trained with system text version %s; this dep-eval writes "
            "version %s",
            version,
            SYSTEM_VERSION,
        )
    return dataclasses.replace(args, **values)


def untrained_module(config: DEPArgs, llm: Engine) -> DEPModule:
    """A randomly initialised DEP module (``allow_untrained=true``: tests only)."""
    logger.warning(
        "!!! DEP is running with a RANDOMLY INITIALISED module (allow_untrained=true). "
        "Its scores mean nothing; this switch exists for tests only. !!!"
    )
    module_config = DEPConfig(llm_name=llm.name, llm_hidden_size=llm.hidden_size)
    if config.encoder:
        module_config = DEPConfig(**identity_fields(CachedEncoder(config.encoder), llm))
    torch.manual_seed(0)
    return DEPModule(module_config).to(llm.device)


def _check_k(k: int, k_max: int) -> None:
    if not 0 <= k <= k_max:
        raise ValueError(f"k={k} is outside 0..{k_max}, the K of this checkpoint")


class DEP(TrainableMethod):
    name = "dep"
    Config = DEPArgs
    TrainArgs = DEPTrainArgs
    config: DEPArgs
    module_class = DEPModule
    shipped_checkpoint = SHIPPED_CHECKPOINT

    def __init__(self, config: DEPArgs, llm: Engine, **kwargs: Any) -> None:
        """``kwargs``: ``module=`` (training) or ``checkpoint=`` (``TrainableMethod``)."""
        super().__init__(config, llm, **kwargs)
        self.module_config: DEPConfig = self.module.config
        self.config = config = prompt_settings(config, self.module_config)
        _check_k(config.k, self.module_config.k)
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

    def load_module(self, checkpoint: Checkpoint | None, llm: Engine) -> DEPModule:
        if checkpoint is None and self.config.allow_untrained:
            return untrained_module(self.config, llm)
        return super().load_module(checkpoint, llm)

    @classmethod
    def check_checkpoint(
        cls,
        config: DEPArgs,
        checkpoint: Checkpoint | None,
        llm_name: str,
        llm_hidden_size: int | None = None,
    ) -> None:
        """From the checkpoint's config.json alone, before the LLM and the weights load: no
        checkpoint, a wrong format, ``k`` beyond its K, another encoder or hidden size."""
        if checkpoint is None and config.allow_untrained:
            if config.k is not None:  # None: the checkpoint's own
                _check_k(config.k, DEPConfig().k)
            return
        super().check_checkpoint(config, checkpoint, llm_name, llm_hidden_size)
        if config.k is not None:
            _check_k(config.k, checkpoint.config.k)  # type: ignore[union-attr]

    @classmethod
    def joint_lora_rank(cls, args: DEPTrainArgs) -> int:
        return args.lora_r

    @classmethod
    def for_training(
        cls, args: DEPTrainArgs, llm: Engine, *, encoder: str | None, max_prompt_tokens: int
    ) -> DEP:
        """DEP around a fresh module (and, with ``lora_r``, a LoRA the trainer adds)."""
        if args.lora_r < 0:
            raise ValueError(f"--lora-r {args.lora_r}: must be 0 (no LoRA) or a rank >= 1")
        cached = CachedEncoder(encoder)
        trained_prompt = {
            "k": args.k,
            "with_text": args.with_text,
            "with_items": args.with_items,
            "align_slots": args.align_slots,
            "system": SYSTEM_VERSION,
        }
        module_config = DEPConfig(
            **identity_fields(cached, llm),
            sae_dim=args.sae_dim,
            k=args.k,
            align_slots=args.align_slots,
            trained_prompt=trained_prompt,
        )
        module = DEPModule(module_config).to(llm.device)
        run_args = DEPArgs(
            k=args.k,
            with_text=args.with_text,
            with_items=args.with_items,
            align_slots=args.align_slots,
            max_prompt_tokens=max_prompt_tokens,
        )
        method = cls(run_args, llm, module=module)
        method.encoder = cached
        method.lora_r = args.lora_r
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
        if self.encoder is None:
            self.encoder = CachedEncoder(self.config.encoder or self.module_config.encoder_name)
        self.embedders[(pool.source, pool.category)] = DifferenceEmbedder(
            self.encoder,
            pool,
            k=self.module_config.k,
            align_slots=self.config.align_slots,
            cold_start=self.module_config.cold_start,
            weighting=self.module_config.weighting,
        )
        if not items_with_peers(pool):  # e.g. LongLaMP, which has no item ids
            logger.warning(
                "DEP: no item of the %s pool has two reviewers, so DEP finds no peers: every "
                "user gets his slots only, no diff slots (the cold-start policy %s; "
                "docs/benchmarks.md)",
                pool.category,
                self.module_config.cold_start,
            )

    # -- steps 1-5 and 6-7 ------------------------------------------------------------

    def dep_inputs(self, samples: Sequence[Sample]) -> DEPInputs:
        first = samples[0]
        return self.embedders[(first.source, first.category)](samples)

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
                with_items=self.config.with_items,
            )
            return Prompt(messages, torch.stack(vectors) if vectors else None)

        return fit_prompt(self.llm, build, len(shown), self.config.max_prompt_tokens)

    def build_prompt(self, sample: Sample, pool: DataPool) -> Prompt:
        inputs = self.dep_inputs([sample])
        record_peers(sample, pool, inputs)
        with torch.no_grad():
            out = self.codes(inputs)
        return self.prompts([sample], pool, inputs, out.his, out.diff)[0]


def record_peers(sample: Sample, pool: DataPool, inputs: DEPInputs) -> None:
    """The slice fields of ``sample`` (dep_eval/report/slices.py): the distinct peers of its
    diff slots' items, and how many slots got a diff embedding."""
    slots = zip(inputs.slot_review[0].tolist(), inputs.diff_mask[0].tolist(), strict=True)
    diff_slots = [j for j, ok in slots if ok]
    peers = {
        user for j in diff_slots for user, _ in pool.peers(sample.user_id, sample.profile[j].asin)
    }
    slices.record(sample.key, dep_peers=len(peers), dep_diff_slots=len(diff_slots))


# dep_lora: the shipped DEP + LoRA checkpoint (`dep-eval train --lora-r 8`). The ablations
# keep the checkpoint's own prompt except dep_with_text, which adds the past reviews' texts
# the shipped checkpoint was not trained with.
register_method(
    DEP,
    label="DEP",
    order=50,
    variants=(
        Variant("dep_lora", "checkpoint=dep-lora-smollm2-minilm"),
        Variant("dep_his_only", "use_diff=false", ablation=True),
        Variant("dep_diff_only", "use_his=false", ablation=True),
        Variant("dep_with_text", "with_text=true", ablation=True),
    ),
    sweep=Sweep("k", tuple(range(9)), "K", "K (history items)"),
)
