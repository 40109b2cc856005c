"""Prompt conditions of the text-to-image worlds: a batch of prompts with their text embeddings
(and, for SDXL, SD3 and FLUX, the pooled embedding; for SDXL the size/crop time ids), the
unconditional counterpart, and the text encoders that make them (SD3 / FLUX:
:class:`FlowTextEncoders`).

SD1.5: ``encoder_hidden_states`` = the CLIP-L text encoder's last hidden state; unconditional =
the empty prompt's. SDXL (diffusers' pipeline, DMD2): the penultimate hidden states of CLIP-L and
OpenCLIP-bigG concatenated (768 + 1280 = 2048), ``text_embeds`` = bigG's projected pooled output,
``time_ids`` = (H, W, 0, 0, H, W); unconditional = zeros for both embeddings with the same time ids
(``force_zeros_for_empty_prompt``) or the empty prompt's, as configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distar.runtime.devices import to_device


@dataclass(frozen=True)
class TextConditions:
    """One batch of conditions; sliceable and concatenable like a tensor batch."""

    prompts: tuple[str, ...]
    embeds: Tensor  # [B, L, D]
    pooled: Tensor | None = None  # [B, P] (SDXL, SD3, FLUX)
    time_ids: Tensor | None = None  # [B, 6] (SDXL)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: slice) -> TextConditions:
        if not isinstance(index, slice):
            raise TypeError("TextConditions take slices")
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return TextConditions(
            self.prompts[index], self.embeds[index], pick(self.pooled), pick(self.time_ids)
        )

    def cat(self, other: TextConditions) -> TextConditions:
        join = lambda a, b: None if a is None else torch.cat([a, b])  # noqa: E731
        return TextConditions(
            self.prompts + other.prompts,
            torch.cat([self.embeds, other.embeds]),
            join(self.pooled, other.pooled),
            join(self.time_ids, other.time_ids),
        )

    def unet_kwargs(self, dtype: torch.dtype) -> dict:
        kwargs: dict = {"encoder_hidden_states": self.embeds}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled, "time_ids": self.time_ids}
        return kwargs


class TextEncoders(nn.Module):
    """The frozen tokenizers + text encoders of a pipeline (one for SD1.5, two for SDXL)."""

    def __init__(self, tokenizers: Sequence, encoders: Sequence[nn.Module], resolution: int):
        super().__init__()
        self.tokenizers = list(tokenizers)
        self.encoders = nn.ModuleList(encoders).eval().requires_grad_(False)
        self.resolution = resolution
        self._time_ids: Tensor | None = None

    @property
    def xl(self) -> bool:  # SDXL's two CLIPs
        return len(self.encoders) == 2

    @property
    def device(self) -> torch.device:
        return next(self.encoders.parameters()).device

    def _ids(self, tokenizer, prompts: Sequence[str], length: int = 0) -> Tensor:
        ids = tokenizer(
            list(prompts),
            padding="max_length",
            max_length=length or tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return to_device(ids, self.device)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> TextConditions:
        prompts = tuple(prompts)
        if not self.xl:
            out = self.encoders[0](self._ids(self.tokenizers[0], prompts))
            return TextConditions(prompts, out.last_hidden_state.float())
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            out = encoder(self._ids(tokenizer, prompts), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder's projected pooled output (text_embeds)
        return TextConditions(
            prompts, torch.cat(hidden, dim=-1).float(), pooled.float(), self.time_ids(len(prompts))
        )

    def time_ids(self, n: int) -> Tensor:
        """(H, W, crop top 0, crop left 0, H, W), made on the device once."""
        if self._time_ids is None or self._time_ids.device != self.device:
            r = self.resolution
            ids = torch.tensor([r, r, 0, 0, r, r], dtype=torch.float32)
            self._time_ids = ids.to(self.device)
        return self._time_ids.expand(n, 6)

    def unconditional(
        self, cond: TextConditions, mode: str, empty: TextConditions
    ) -> TextConditions:
        return unconditional(cond, mode, empty)


def unconditional(cond: TextConditions, mode: str, empty: TextConditions) -> TextConditions:
    """``mode="zeros"``: zero embeddings (and pooled), the same time ids; ``"empty"``: the empty
    prompt's embeddings, repeated (``empty`` holds them for one prompt)."""
    n = len(cond)
    if mode == "zeros":
        zeros = lambda t: None if t is None else torch.zeros_like(t)  # noqa: E731
        return TextConditions(("",) * n, zeros(cond.embeds), zeros(cond.pooled), cond.time_ids)
    rep = lambda t: None if t is None else t.expand(n, *t.shape[1:])  # noqa: E731
    return TextConditions(("",) * n, rep(empty.embeds), rep(empty.pooled), cond.time_ids)


class FlowTextEncoders(TextEncoders):
    """The frozen text encoders of a rectified-flow pipeline, as diffusers' pipelines use them.

    ``sd35`` (``StableDiffusion3Pipeline.encode_prompt``): CLIP-L and OpenCLIP-bigG penultimate
    hidden states concatenated (768 + 1280), zero-padded to T5's width (4096) and followed by
    T5-XXL's last hidden state along the sequence (77 + 256 tokens); pooled = both CLIPs'
    projected pooled outputs concatenated (2048). ``flux`` (``FluxPipeline.encode_prompt``):
    embeddings = T5-XXL's last hidden state (512 tokens), pooled = CLIP-L's pooler output
    (768)."""

    def __init__(
        self, kind: str, tokenizers: Sequence, encoders: Sequence[nn.Module], t5_tokens: int
    ) -> None:
        super().__init__(tokenizers, encoders, resolution=0)
        self.kind, self.t5_tokens = kind, t5_tokens

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> TextConditions:
        prompts = tuple(prompts)
        *clips, t5 = zip(self.tokenizers, self.encoders, strict=True)
        t5_embeds = t5[1](self._ids(t5[0], prompts, self.t5_tokens))[0].float()
        if self.kind == "flux":
            ((tokenizer, clip_l),) = clips
            pooled = clip_l(self._ids(tokenizer, prompts)).pooler_output
            return TextConditions(prompts, t5_embeds, pooled.float())
        hidden, pooled = [], []
        for tokenizer, encoder in clips:
            out = encoder(self._ids(tokenizer, prompts), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled.append(out[0])  # CLIPTextModelWithProjection's text_embeds
        clip = torch.cat(hidden, dim=-1).float()
        clip = torch.nn.functional.pad(clip, (0, t5_embeds.shape[-1] - clip.shape[-1]))
        embeds = torch.cat([clip, t5_embeds], dim=1)
        return TextConditions(prompts, embeds, torch.cat(pooled, dim=-1).float())
