"""The transformers engine: batched, seeded generation and the trainer's forward pass.

One decode loop over left-padded batches (every row's next token sits at the last
position), a KV cache, an LM head applied to one position per row, and per-row seeded
sampling (``sampling.py``). The trainer's loss goes through the same padding and the same
``SoftPromptTable.embed``, so training and inference build identical inputs.

Where the device decides: on a CPU each prompt is prefilled alone (compute-bound, so padding
is pure loss) and the LM head runs on fixed blocks of ``LOGIT_BLOCK`` rows (a row's logits
then never depend on its batch). On a GPU the prompts are prefilled in left-padded groups
(``prefill="batched"``: one forward per group of up to ``PREFILL_TOKENS`` tokens, as a GPU
gains from wide matrix products) and the head runs on the whole batch at once; GPU kernels
differ with the row count anyway, so a GPU text may depend on its batch (README).
On a GPU the decode step is also captured once per batch as a CUDA graph and replayed
(``decode="graph"``, ``fixed_decode.py``): a step of a 7B model is ~1,300 kernel launches,
which otherwise cost more time than the GPU's work at small batches.
Every tensor the model reads is built on the engine's ``device``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import Cache

from dep_eval.engine import adapters, grouped_attention, loading, memory, sampling
from dep_eval.engine.base import Generation, GenerationSettings, Prompt, TrainableEngine
from dep_eval.engine.fixed_decode import DynamicDecoder, FixedShapeDecoder
from dep_eval.engine.kv_cache import PreallocatedCache, left_padded
from dep_eval.engine.soft_prompts import SoftPromptTable

logger = logging.getLogger(__name__)

LOGIT_BLOCK = 8  # rows per LM-head call on a CPU; see HFEngine.last_logits
PREFILL_TOKENS = 16384  # padded tokens per batched prefill forward (bounds its activations)
PREFILL_MODES = ("auto", "rows", "batched")
DECODE_MODES = ("auto", "dynamic", "fixed", "graph")
CACHE_ALIGN = 16  # cache capacity rounded up to this: aligned rows for the fused attention kernels
Router = Callable[[Sequence[int]], contextlib.AbstractContextManager]


class NonFiniteLogits(FloatingPointError):
    """NaN or infinite logits: sampled, they give some fixed token (id 0 under greedy) at
    every step, which would be scored as text. A broken adapter or weights, or float16
    overflow, cause it."""

    def __init__(self, step: int, rows: list[int], message: str = "") -> None:
        self.step, self.rows = step, rows
        super().__init__(message or f"generation step {step}: non-finite logits in rows {rows}")

    def named(self, peft: str | None, adapters: list[str | None]) -> NonFiniteLogits:
        used = sorted({a for a in adapters if a}) + ([f"peft={peft}"] if peft else [])
        return NonFiniteLogits(
            self.step,
            self.rows,
            f"generation step {self.step}: the LLM's logits are NaN or infinite for "
            f"{len(self.rows)} prompt(s) of the batch (adapters: {', '.join(used) or 'none'}); "
            "stopped rather than score text sampled from them: check those adapters' weights "
            "and lora_alpha, or use dtype=float32 if float16 overflowed",
        )


def _check_finite(logits: torch.Tensor, step: int) -> None:
    finite = torch.isfinite(logits).all(dim=-1)
    if not bool(finite.all()):
        raise NonFiniteLogits(step, (~finite).nonzero().flatten().tolist())


class HFEngine(TrainableEngine):
    """A frozen Hugging Face causal LM with soft prompts and per-row seeded sampling.

    ``prefill``: ``rows`` (each prompt alone), ``batched`` (left-padded groups) or ``auto``
    (``batched`` on CUDA, ``rows`` elsewhere); see the module docstring.
    ``decode``: ``dynamic`` (the attention spans the filled cache, the mask grows each step),
    ``fixed`` (fixed-shape steps, ``fixed_decode.py``), ``graph`` (those steps replayed as a
    CUDA graph; CUDA only) or ``auto`` (``graph`` on CUDA, ``dynamic`` elsewhere). Batches
    with per-prompt adapters decode ``fixed`` rather than ``graph``: PEFT routes their rows in
    Python at every step.
    """

    per_prompt_adapters = True  # Prompt.adapter: PEFT's mixed-adapter batches

    def __init__(
        self,
        pretrained: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        trust_remote_code: bool = False,
        max_length: int | None = None,
        peft: str | None = None,
        prefill: str = "auto",
        decode: str = "auto",
    ) -> None:
        if prefill not in PREFILL_MODES:
            raise ValueError(f"prefill={prefill!r}: expected one of {', '.join(PREFILL_MODES)}")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode={decode!r}: expected one of {', '.join(DECODE_MODES)}")
        self.name = pretrained or loading.EMBEDDED_LLM
        path = loading.model_path(pretrained)
        self.device = loading.resolve_device(device)
        self.dtype = loading.resolve_dtype(dtype, self.device)
        tokenizer = loading.load_tokenizer(path, trust_remote_code)
        self.model = loading.load_causal_lm(path, self.dtype, self.device, trust_remote_code)
        self.peft = peft  # a PEFT adapter folded into the weights (``engine/adapters.py``)
        if peft:
            self.model = adapters.merge_adapter(self.model, peft, self.name)
        if grouped_attention.needed(self.model):  # transformers < 5.23 copies KV heads per step
            grouped_attention.install(self.model)
        self.tokens = SoftPromptTable(tokenizer, self.model.get_input_embeddings())
        self._cache_arg = loading.kv_cache_argument(self.model)
        context: int = getattr(self.model.config, "max_position_embeddings", 8192)
        self.max_length = int(max_length) if max_length else context
        self.stop_ids = sampling.stop_token_ids(tokenizer, self.model.generation_config)
        on_gpu = self.device.type == "cuda"
        self.prefill = prefill if prefill != "auto" else ("batched" if on_gpu else "rows")
        self.logit_block: int | None = None if on_gpu else LOGIT_BLOCK  # None: the whole batch
        self.decode = self._decode_mode(decode)

    def _decode_mode(self, asked: str) -> str:
        """``decode`` resolved for this device and attention implementation."""
        on_gpu = self.device.type == "cuda"
        if asked == "auto":
            asked = "graph" if on_gpu else "dynamic"
        if asked == "graph" and not on_gpu:
            raise ValueError(
                f"decode=graph needs CUDA, and this engine runs on {self.device}: use "
                "decode=fixed (the same fixed-shape steps, run eagerly) or decode=auto"
            )
        attention = getattr(self.model.config, "_attn_implementation", "sdpa")
        if asked != "dynamic" and attention not in ("sdpa", "eager", grouped_attention.NAME):
            # fixed-shape steps pass a 4D additive mask, which only sdpa (also in
            # grouped_attention's form) and eager attention read as given
            logger.info("decode=%s needs sdpa or eager attention, not %s: decode=dynamic",
                        asked, attention)  # fmt: skip
            return "dynamic"
        return asked

    def fold_adapter(self, folder: str, argument: str = "peft") -> None:
        self.model = adapters.merge_adapter(self.model, folder, self.name, argument)

    # -- batching -----------------------------------------------------------------------

    def auto_batch_size(self, prompt_tokens: int, new_tokens: int, rows: int) -> int:
        """``batch_size=auto``: as many rows as fit the memory free now on the engine's
        device (host RAM on a CPU, the GPU's own memory on CUDA; ``memory.device_budget``)."""
        grouped = PREFILL_TOKENS // max(prompt_tokens, 1) if self.prefill == "batched" else 1
        cost = memory.row_cost(
            self.model.config, self.dtype, prompt_tokens, new_tokens, prefill_rows=max(grouped, 1)
        )
        size, reason = memory.auto_batch_size(cost, memory.device_budget(self.device), rows)
        logger.info(
            "batch_size=auto: %d for prompts of up to %d tokens + %d new (%s)",
            size,
            prompt_tokens,
            new_tokens,
            reason,
        )
        return size

    def left_pad(
        self, rows: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``rows`` of token ids -> input_ids, attention mask and position ids, each (B, T).

        Left padding, so that every row's last token is at the last position.
        """
        width = max(map(len, rows))
        pad = self.tokens.pad_id
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + list(ids) for ids in rows], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in rows], device=self.device
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return input_ids, mask, positions

    def last_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits (B, vocab) of ``hidden`` (B, H), one position per row.

        Only the last position is needed, so the prefill never materialises
        ``batch x length x vocab`` logits (gigabytes for long prompts). Matrix kernels may
        pick a different path for a different number of rows, so on a CPU every row goes
        through a zero-padded block of exactly ``LOGIT_BLOCK`` rows: a row's logits then never
        depend on the batch it shares. On a GPU (``logit_block`` None) the whole batch goes
        through at once: its other kernels vary with the batch anyway.
        """
        head = self.model.get_output_embeddings()
        if self.logit_block is None:  # a GPU: one product for the batch (module docstring)
            return head(hidden)
        if adapters.is_adapter_layer(head):
            # a per-row adapter on the head (OPPU's target_modules may name lm_head): PEFT
            # routes exactly the batch's rows, so the head sees them unpadded, in one product
            return head(hidden)
        rows, block = hidden.shape[0], self.logit_block
        padded = -(-rows // block) * block
        hidden = torch.cat([hidden, hidden.new_zeros(padded - rows, hidden.shape[1])])
        return torch.cat([head(part) for part in hidden.split(block)])[:rows]

    # -- generation -----------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Prompt],
        seeds: Sequence[int],
        settings: GenerationSettings,
        batch_size: int = 1,
        progress: str | None = None,
        on_finished: Callable[[list[tuple[int, Generation]]], None] | None = None,
    ) -> list[Generation]:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be at least 1")
        caps = [prompt.max_new_tokens or settings.max_new_tokens for prompt in prompts]
        token_ids = [
            self.fit_prompt(self.tokenize(prompt), cap)
            for prompt, cap in zip(prompts, caps, strict=True)
        ]
        order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))  # fewer pads
        results: list[Generation | None] = [None] * len(prompts)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        bar = tqdm(total=len(prompts), desc=progress, unit="doc", disable=progress is None)
        for batch in batches:
            started = time.perf_counter()
            names = [prompts[i].adapter for i in batch]
            with adapters.per_row_adapters(self.model, names, self.name) as route:
                try:
                    texts, counts = self._generate_batch(
                        [token_ids[i] for i in batch],
                        [prompts[i].soft_vectors for i in batch],
                        [seeds[i] for i in batch],
                        [caps[i] for i in batch],
                        settings,
                        route,
                        routed=any(names),
                    )
                except NonFiniteLogits as error:  # say which adapters those rows went through
                    used = [prompts[batch[j]].adapter for j in error.rows]
                    raise error.named(self.peft, used) from None
            seconds = (time.perf_counter() - started) / len(batch)
            for i, text, count in zip(batch, texts, counts, strict=True):
                results[i] = Generation(text, len(token_ids[i]), count, seconds)
            if on_finished is not None:
                on_finished([(i, results[i]) for i in batch])  # type: ignore[misc]
            bar.update(len(batch))  # documents, not batches: "7/10" means 7 are written
        bar.close()
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(
        self,
        token_ids: list[list[int]],
        soft_vectors: list[torch.Tensor | None],
        seeds: list[int],
        max_new_tokens: list[int],
        settings: GenerationSettings,
        route: Router,
        routed: bool = False,
    ) -> tuple[list[str], list[int]]:
        """One batch, its prompts already fitted to ``max_length`` (``fit_prompt``);
        ``routed``: some rows go through their own adapters (``route``)."""
        budget = max(max_new_tokens)
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        out: list[list[int]] = [[] for _ in token_ids]
        live = list(range(len(token_ids)))  # the prompt each row of the running batch is for
        done: set[int] = set()
        mode = "fixed" if self.decode == "graph" and routed else self.decode
        decoder, hidden, positions = self.start_decoding(
            token_ids, soft_vectors, budget, mode, route
        )  # hidden: (B, H), positions: (B, 1)
        # Every row at once from here on, each through its own adapter (if any).
        with route(live):
            logits = self.last_logits(hidden)  # (B, vocab); an adapter may hold the LM head
            for step in range(budget):
                _check_finite(logits, step)
                next_ids = sampling.pick_next(
                    logits, [generators[i] for i in live], settings
                )  # (B,)
                for i, token in zip(live, next_ids.tolist(), strict=True):
                    if i in done:
                        continue
                    out[i].append(token)
                    if (
                        token in self.stop_ids
                        or len(out[i]) >= max_new_tokens[i]
                        or bool(settings.until)
                        and sampling.hits_stop_string(self.tokenizer, out[i], settings.until)
                    ):
                        done.add(i)
                if len(done) == len(live):
                    break
                # Finished rows stay in the batch (fed padding): dropping them changed the other
                # rows' texts (tests/test_engine.py), as kernels vary with the row count.
                next_ids = next_ids.masked_fill(
                    torch.tensor([i in done for i in live], device=self.device), self.tokens.pad_id
                )
                # a finished row's position may pass the context; a live row's never does
                positions = (positions[:, -1:] + 1).clamp(max=self.max_length - 1)  # (B, 1)
                logits = decoder.step(next_ids, positions)
        if mode == "graph" and not decoder.use_graph:  # its capture failed: eager from now on
            self.decode = "fixed"
        decoder.release()
        texts = [
            sampling.finish_text(self.tokenizer, ids, self.stop_ids, settings.until) for ids in out
        ]
        return texts, [len(ids) for ids in out]

    def start_decoding(
        self,
        token_ids: list[list[int]],
        soft_vectors: Sequence[torch.Tensor | None],
        new_tokens: int,
        mode: str,
        route: Router = adapters.no_adapters,
    ) -> tuple[DynamicDecoder | FixedShapeDecoder, torch.Tensor, torch.Tensor]:
        """Prefill one batch and hand back its decode steps: what ``generate`` runs, for the
        benchmarks and tests that time or compare single steps.

        Args:
            token_ids: each prompt's ids, already fitted (``fit_prompt``).
            soft_vectors: each prompt's soft vectors (``Prompt.soft_vectors``) or None.
            new_tokens: the cache keeps room for at least this many steps.
            mode: ``dynamic``, ``fixed`` or ``graph`` (see ``decoder``).
            route: sends each row's prefill through its own adapter (``adapters``).

        Returns:
            the decoder; the hidden state (B, H) at each prompt's last token, whose logits
            (``last_logits``) give the first new token; that token's position (B, 1), so step
            ``k`` (from 1) runs at ``positions + k``.
        """
        input_ids, mask, positions = self.left_pad(token_ids)  # (B, T) each
        embeds = self.tokens.embed(input_ids, soft_vectors)  # (B, T, H)
        width = input_ids.shape[1]
        room = -(-(width + new_tokens) // CACHE_ALIGN) * CACHE_ALIGN - width  # >= new_tokens
        prefill = self.prefill_batched if self.prefill == "batched" else self.prefill_rows
        cache, hidden = prefill(embeds, [len(ids) for ids in token_ids], room, route)
        return self.decoder(cache, mask, mode), hidden, positions[:, -1:]

    def decoder(
        self, cache: PreallocatedCache, mask: torch.Tensor, mode: str
    ) -> DynamicDecoder | FixedShapeDecoder:
        """The decode steps of one prefilled batch (``mask``: its (B, T) 0/1 mask) in
        ``mode`` (``dynamic``, ``fixed`` or ``graph``; see the class docstring)."""
        if mode == "dynamic":
            return DynamicDecoder(self.step_logits, cache, mask)
        return FixedShapeDecoder(self.step_logits, cache, mask, self.dtype, mode == "graph")

    def step_logits(
        self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Cache
    ) -> torch.Tensor:
        """One decode step: token ``ids`` (B, 1) at ``positions`` (B, 1), attending where
        ``mask`` says (B, T) 0/1, or (B, 1, 1, capacity) additive), -> logits (B, vocab)."""
        hidden = self.hidden_states(self.tokens.embedding(ids), positions, mask, cache)
        return self.last_logits(hidden[:, -1])  # hidden: (B, 1, H)

    def hidden_states(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """The base model's last hidden states (B, T, H) over ``embeds`` (B, T, H) at
        ``positions`` (B, T), attending where ``mask`` says (None: everywhere earlier);
        with a ``cache``, this forward's keys and values are appended to it."""
        with_cache = {"use_cache": True, self._cache_arg: cache} if cache is not None else {}
        output = self.model.base_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **with_cache
        )
        return output.last_hidden_state

    def prefill_rows(
        self,
        embeds: torch.Tensor,
        lengths: list[int],
        new_tokens: int,
        route: Router = adapters.no_adapters,
    ) -> tuple[PreallocatedCache, torch.Tensor]:
        """Prefill each row of the left-padded ``embeds`` (B, T, H) alone, without its padding
        (``route``: ``per_row_adapters``' router, so that row b keeps its own adapter).

        Returns the batch's cache (room for ``new_tokens`` more positions) and each row's
        last hidden state (B, H). A row's prefill is then exactly what it is at batch 1, and
        no compute goes to padding (see ``kv_cache.left_padded``).
        """
        width = embeds.shape[1]
        layers = self.model.config.num_hidden_layers
        rows, last = [], []
        for b, length in enumerate(lengths):
            cache = PreallocatedCache(layers, length)
            with route([b]):
                hidden = self.hidden_states(
                    embeds[b : b + 1, width - length :],  # (1, length, H)
                    torch.arange(length, device=self.device)[None],
                    cache=cache,
                )
            rows.append(cache)
            last.append(hidden[0, -1])
        return left_padded(rows, width, width + new_tokens), torch.stack(last)

    def prefill_batched(
        self,
        embeds: torch.Tensor,
        lengths: list[int],
        new_tokens: int,
        route: Router = adapters.no_adapters,
    ) -> tuple[PreallocatedCache, torch.Tensor]:
        """``prefill_rows``' result from left-padded groups of rows, one forward each.

        The rows (longest first, as ``generate`` orders them) are cut into groups of at most
        ``PREFILL_TOKENS`` padded tokens; each group is padded to its own longest row only,
        and its cache lands at the right end of the batch's (``kv_cache.left_padded``).
        """
        width = embeds.shape[1]
        layers = self.model.config.num_hidden_layers
        groups, caches, last = _prefill_groups(lengths, PREFILL_TOKENS), [], []
        for rows in groups:
            group_width = max(lengths[b] for b in rows)
            part = embeds[rows[0] : rows[-1] + 1, width - group_width :]  # (G, group width, H)
            mask = torch.tensor(
                [[0] * (group_width - lengths[b]) + [1] * lengths[b] for b in rows],
                device=self.device,
            )
            cache = PreallocatedCache(layers, group_width)
            with route(rows):
                hidden = self.hidden_states(part, (mask.cumsum(-1) - 1).clamp(min=0), mask, cache)
            caches.append(cache)
            last.append(hidden[:, -1])
        return left_padded(caches, width, width + new_tokens), torch.cat(last)

    # -- training ---------------------------------------------------------------------------

    def target_loss(self, prompts: Sequence[Prompt], targets: Sequence[list[int]]) -> torch.Tensor:
        """Mean next-token cross-entropy of ``targets[b]`` following ``prompts[b]``.

        The trainer's forward: same padding and embedding as generation, differentiable in
        the prompts' soft vectors.
        """
        prompt_ids = [self.tokenize(prompt) for prompt in prompts]
        rows = [ids + list(target) for ids, target in zip(prompt_ids, targets, strict=True)]
        input_ids, mask, positions = self.left_pad(rows)  # (B, T)
        labels = torch.full_like(input_ids, -100)
        for b, target in enumerate(targets):
            labels[b, input_ids.shape[1] - len(target) :] = torch.tensor(target, device=self.device)
        embeds = self.tokens.embed(input_ids, [prompt.soft_vectors for prompt in prompts])
        return self.lm_loss(embeds, mask, labels, positions)

    def lm_loss(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        labels: torch.Tensor,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy over the tokens whose ``labels`` (B, T) are not -100.

        The LM head runs on the positions that predict a labelled token, not on the whole
        prompt: the same loss as ``model(labels=...)`` at a fraction of the head's cost.
        """
        hidden = self.hidden_states(embeds, positions, mask)  # (B, T, H)
        predicts = labels[:, 1:] != -100  # position t predicts token t + 1
        logits = self.model.get_output_embeddings()(hidden[:, :-1][predicts])
        return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][predicts])


def _prefill_groups(lengths: Sequence[int], tokens: int) -> list[list[int]]:
    """Consecutive row indices grouped so that each group, padded to its longest row, holds
    at most ``tokens`` tokens (a longer row forms a group alone)."""
    groups: list[list[int]] = []
    for b in range(len(lengths)):
        group = groups[-1] if groups else None
        if group and max(lengths[i] for i in group + [b]) * (len(group) + 1) <= tokens:
            group.append(b)
        else:
            groups.append([b])
    return groups
