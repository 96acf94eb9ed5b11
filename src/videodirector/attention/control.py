"""Attention interventions of VideoDirector, each a small processor over named layers.

* :class:`RecordingProcessor` (stage 1): records temporal attention probabilities and spatial
  self-attention keys, with autograd, for STDG (paper Eqs. 2-3).
* :class:`SelfControlProcessor` (stage 2): SA-I and SA-II (paper Eq. 6).
* :class:`CrossControlProcessor` (stage 2): prompt-to-prompt refine/replace/reweight
  (paper Eq. 7) and the maps for an optional local blend.

The stage-2 batch is ``[edit-uncond, edit-cond, recon-uncond, recon-cond]``, without recon-uncond on
steps that read nothing from it (:class:`~videodirector.attention.processors.Branches`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.compile import attention_blocks_eager
from .processors import (
    AttentionLayer, Branches, Clock, ControlProcessor, StopForward, call_order_key, merge_heads, opaque_to_compiler,
)
from . import seq_align


# --------------------------------------------------------------------------- stage 1: recording


def key_feature(name: str) -> str:
    """Where a recorder keeps a layer's attention key (``<layer>.key``); probabilities go under ``<layer>``, so one
    temporal layer can give both (official ``app_guidance.block_type: temp`` reads the keys of the same motion
    modules whose maps the temporal term reads)."""
    return f"{name}.key"


class FeatureRecorder:
    """Holds what the STDG losses asked for, keyed by layer name, for one forward at a time."""

    def __init__(self, temporal: list[AttentionLayer], appearance: list[AttentionLayer]) -> None:
        self.temporal = {l.name for l in temporal}
        self.appearance = {l.name for l in appearance}
        wanted = [*temporal, *appearance]
        # the last layer the forward reaches, for the early exit of feature-only forwards
        self.last = max(wanted, key=lambda l: call_order_key(l.name)).name if wanted else None
        self.active = False
        self.stop_early = False
        self.tail_without_grad = False
        self.store: dict[str, Tensor] = {}

    @contextmanager
    def capture(self, stop_early: bool = False, tail_without_grad: bool = False) -> Iterator[dict[str, Tensor]]:
        """Record during the enclosed forward; with ``stop_early`` the forward ends after the last feature.

        With ``tail_without_grad`` the rest of the forward after the last feature runs without autograd: its
        output keeps its value, and nothing after the last feature is kept for a backward that the features'
        loss never reaches (for STDG, all of ``up_blocks.3`` at the highest resolution)."""
        self.store = {}
        self.active, self.stop_early, self.tail_without_grad = True, stop_early, tail_without_grad
        grad_mode = torch.is_grad_enabled()
        try:  # compiled blocks (model.compile) can neither store from inside nor stop early: those with attention eager
            with attention_blocks_eager():
                yield self.store
        except StopForward:
            pass
        finally:
            self.active, self.stop_early, self.tail_without_grad = False, False, False
            torch.set_grad_enabled(grad_mode)


class RecordingProcessor(ControlProcessor):
    """Plain attention that also records, while its recorder is active:

    * temporal-term layers: probabilities ``softmax(Q Kᵀ / sqrt(d))`` of shape ``(B·h·w, heads, F, F)``,
      under the layer name;
    * appearance-term layers, under :func:`key_feature`: a spatial self-attention key ``to_k(norm1(h))`` of
      shape ``(B·F, h·w, C)``, or a temporal attention key (after the position embedding, before the head
      split, as the official ``get_temp_attn_key``) ``(B·h·w, F, C)`` laid out per frame as ``(F, B·h·w, C)``
      (the official ``permute(1, 0, 2)``; STDG forwards have B = 1).
    """

    def __init__(self, layer: AttentionLayer, recorder: FeatureRecorder) -> None:
        super().__init__(layer)
        self.recorder = recorder

    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        rec = self.recorder
        name = self.layer.name
        if not rec.active:
            return F.scaled_dot_product_attention(query, key, value)
        if name in rec.temporal:
            probs = torch.softmax(query @ key.transpose(-1, -2) * attn.scale, dim=-1)
            rec.store[name] = probs
            out = probs @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value)
        if name in rec.appearance:
            k = merge_heads(key)
            rec.store[key_feature(name)] = k.transpose(0, 1) if self.layer.kind == "temporal" else k
        if name == rec.last:
            if rec.stop_early:
                raise StopForward
            if rec.tail_without_grad:  # capture() restores the grad mode when the forward is done
                torch.set_grad_enabled(False)
        return out


# --------------------------------------------------------------------------- stage 2: schedule


def step_window(fraction: float | Sequence[float], rows: int) -> range:
    """Steps of a window given as fractions, compiled as prompt-to-prompt does (``update_alpha_time_word``, and
    the official ``MutualSelfAttention_p2p``): a number ``t`` means ``[0, t]``; ``[start, end]`` gives steps
    ``[int(rows · start), int(rows · end))``."""
    start, end = (0.0, fraction) if isinstance(fraction, (int, float)) else fraction
    return range(int(rows * start), int(rows * end))


@dataclass(frozen=True)
class EditSchedule:
    """Where and when each stage-2 control acts, compiled from fractions once (official code)."""

    sa1_steps: range
    sa2_steps: range
    sa2_layers: range  # spatial self-attention indices, call order
    sa1_max_tokens: int
    cross_steps: range
    cross_layers: range  # cross-attention indices, call order

    @classmethod
    def build(cls, num_steps: int, tau_s: float | Sequence[float], tau_c: float | Sequence[float],
              mutual_layers: list[int], mutual_end_step: int | None, cross_layers: list[int], sa1_max_tokens: int,
              sa1: bool = True, sa2: bool = True, cross: bool = True) -> "EditSchedule":
        """``tau_s``/``tau_c`` are fractions or ``[start, end]`` windows (:func:`step_window`).

        SA-I acts on ``tau_s``'s window of ``T`` steps and SA-II from its end on (the official
        ``step_idx = range(num_self_replace_p2p[1], end_step)``); cross-attention control on ``tau_c``'s
        window of prompt-to-prompt's ``T + 1``-row alpha table.
        """
        sa1_window = step_window(tau_s, num_steps)
        end = num_steps if mutual_end_step is None else min(mutual_end_step, num_steps)
        return cls(
            sa1_steps=sa1_window if sa1 else range(0),
            sa2_steps=range(sa1_window.stop, end) if sa2 else range(0),
            sa2_layers=range(*mutual_layers),
            sa1_max_tokens=sa1_max_tokens,
            cross_steps=step_window(tau_c, num_steps + 1) if cross else range(0),
            cross_layers=range(*cross_layers),
        )


@dataclass
class EditContext:
    """Per-edit state shared by the stage-2 processors."""

    clock: Clock
    schedule: EditSchedule
    num_frames: int
    masks_by_tokens: dict[int, Tensor]  # tokens -> (F, tokens) bool, object = True
    blend_maps: dict[str, Tensor] = field(default_factory=dict)
    free_by_tokens: dict[int, Tensor] | None = None
    """tokens -> (F, tokens) bool, True where the edit starts from fresh noise (``--renoise``): SA-I
    leaves these queries their own attention, since no source structure is wanted there."""
    branches: tuple[str, ...] = Branches.NAMES
    """The batch layout of the current step (set by the loop with the clock)."""


HIDDEN_KEY_SCORE = -30000.0
"""What :func:`attention_hiding_keys` adds to a hidden key's score before the softmax scale: at any SD head width
(``d`` <= 160, scale >= 0.079) it lowers the score by more than 2,300, so ``exp`` gives exactly 0 in float32 for
any score the model can reach, as the official additive ``-inf`` bias does."""
FLASH_MASK_MIN_TOKENS = 2048
"""Tokens from which SA-II hides keys in extra dimensions on CUDA rather than with a boolean mask (measured faster at
4,096 tokens, slower at 1,024 and 256; see :func:`mutual_self_attention`)."""
EXTRA_DIMS = 8
"""Head dimensions added by :func:`attention_hiding_keys`: flash kernels take head sizes in multiples of 8."""


def attention_hiding_keys(query: Tensor, keys: Sequence[Tensor], values: Sequence[Tensor], hidden: Tensor) -> Tensor:
    """``softmax(Q Kᵀ / sqrt(d) + B) V`` over the keys and values concatenated along the tokens, with ``B = -inf``
    on the ``hidden`` keys and 0 elsewhere, without a mask.

    A mask sends ``scaled_dot_product_attention`` to a slower kernel (memory-efficient or math). Here the bias rides
    in extra head dimensions instead: the queries get a column of ones, the keys :data:`HIDDEN_KEY_SCORE` where
    hidden and 0 elsewhere, the values zeros, and the scale stays ``1/sqrt(d)``, so a flash kernel computes
    ``Q Kᵀ + 1·b`` exactly (the extra products are ``1·b`` and ``0·0``) and the output's extra columns are 0.

    Args:
        query: ``(B, heads, N, d)``; keys, values: parts ``(B, heads, M_i, d)``.
        hidden: ``(B, Σ M_i)`` bool, True where the key gets no weight. Each query must see at least one key.
    """
    d = query.shape[-1]
    tokens = sum(k.shape[2] for k in keys)

    def widened(parts: Sequence[Tensor], rows: int) -> Tensor:
        out = query.new_empty(*query.shape[:2], rows, d + EXTRA_DIMS)
        out[..., d:] = 0
        at = 0
        for x in parts:
            out[:, :, at : at + x.shape[2], :d] = x
            at += x.shape[2]
        return out

    q, k, v = widened([query], query.shape[2]), widened(keys, tokens), widened(values, tokens)
    q[..., d] = 1
    k[..., d] = (hidden.to(k.dtype) * HIDDEN_KEY_SCORE)[:, None, :]
    return F.scaled_dot_product_attention(q, k, v, scale=d ** -0.5)[..., :d]


def attention_masking_keys(query: Tensor, keys: Sequence[Tensor], values: Sequence[Tensor], hidden: Tensor) -> Tensor:
    """:func:`attention_hiding_keys` with a boolean mask: the same function, the kernel that takes a mask."""
    return F.scaled_dot_product_attention(query, torch.cat(list(keys), dim=2), torch.cat(list(values), dim=2),
                                          attn_mask=~hidden[:, None, None, :])


def mutual_self_attention(q_edit: Tensor, k_recon: Tensor, v_recon: Tensor, k_edit: Tensor, v_edit: Tensor,
                          recon_object: Tensor) -> Tensor:
    """SA-II (paper Eq. 6, second case): edit queries over ``[K_recon | K_edit]``, ``[V_recon | V_edit]``.

    Reconstruction keys inside the object mask get no weight (the official code's additive
    ``-inf`` bias): edit queries read their own tokens and the source *background*.

    On CUDA, from :data:`FLASH_MASK_MIN_TOKENS` tokens on, the mask rides in extra head dimensions
    (:func:`attention_hiding_keys`), which keeps the flash kernel. On one H200 (``benchmarks/edit_speed_probe.py``,
    both edit branches) it took 5.3 ms against 7.5 ms with a boolean mask at 64 x 64 tokens, but 0.91 against 0.78 ms
    at 32 x 32 and 0.29 against 0.23 ms at 16 x 16, where widening the tensors costs more than the kernel saves. On
    the CPU the boolean mask is faster (the math kernel takes it at no cost).

    Args:
        q_edit, k_*, v_*: ``(F, heads, N, d)``.
        recon_object: ``(F, N)`` bool, True on the object.
    """
    hidden = torch.cat([recon_object, torch.zeros_like(recon_object)], dim=1)  # (F, 2N)
    flash = q_edit.is_cuda and q_edit.shape[2] >= FLASH_MASK_MIN_TOKENS
    attend = attention_hiding_keys if flash else attention_masking_keys
    return attend(q_edit, [k_recon, k_edit], [v_recon, v_edit], hidden)


class SelfControlProcessor(ControlProcessor):
    """SA-I before ``tau_s`` (edit-cond attends with the recon-cond map), SA-II after (on ``sa2_layers``)."""

    def __init__(self, layer: AttentionLayer, ctx: EditContext) -> None:
        super().__init__(layer)
        self.ctx = ctx

    @opaque_to_compiler
    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        ctx, step, tokens = self.ctx, self.ctx.clock.step, query.shape[2]
        sdpa = F.scaled_dot_product_attention
        if query.shape[0] != len(ctx.branches) * ctx.num_frames:
            return sdpa(query, key, value)
        sa1 = step in ctx.schedule.sa1_steps and tokens <= ctx.schedule.sa1_max_tokens
        sa2 = step in ctx.schedule.sa2_steps and self.layer.index in ctx.schedule.sa2_layers
        if not (sa1 or sa2):
            return sdpa(query, key, value)
        if sa2:  # the recon branches attend plainly; both edit branches in one masked call
            assert ctx.branches == Branches.NAMES, "SA-II reads the recon-uncond branch"
            n = 2 * ctx.num_frames
            obj = ctx.masks_by_tokens[tokens]
            edit = mutual_self_attention(query[:n], key[n:], value[n:], key[:n], value[:n], obj.repeat(2, 1))
            return torch.cat([edit, sdpa(query[n:], key[n:], value[n:])])
        q, k, v = (Branches.split(x, ctx.branches) for x in (query, key, value))
        out = Branches.split(sdpa(query, key, value), ctx.branches)
        # SA-I: W_recon · V_edit (Eq. 6 first case): the recon-cond map applied to edit-cond values.
        sa1_out = sdpa(q["recon_cond"], k["recon_cond"], v["edit_cond"])
        if ctx.free_by_tokens is not None:  # renoised queries keep their own map
            free = ctx.free_by_tokens[tokens][:, None, :, None]
            sa1_out = torch.where(free, out.parts["edit_cond"], sa1_out)
        out.parts["edit_cond"] = sa1_out
        return out.join()


class CrossControlProcessor(ControlProcessor):
    """Prompt-to-prompt on the edit-cond branch with the recon-cond map as base (paper Eq. 7).

    Refine: ``A_e'[:, j] = e_j (a_j A_r[:, mapper_j] + (1 - a_j) A_e[:, j])``;
    replace: ``A_e' = e · (A_r @ M)``. Applied on ``cross_steps`` and ``cross_layers`` only.

    Both are linear in the key columns, so the output ``A_e' V_e`` is computed without forming a map:
    ``A_r (W V_e) + A_e (w ⊙ V_e)``, with ``W = M diag(e)`` and ``w = 0`` (replace), or
    ``W[i, j] = a_j e_j [mapper_j = i]`` and ``w = e ⊙ (1 - a)`` (refine); each product is one fused attention
    call (:meth:`mixing_matrices`). The maps are formed only where the local blend records them (the output still
    comes from the mixed values, so a blend changes no arithmetic), or everywhere with :attr:`form_maps`, which
    also takes the output from them (the equation as written; ``benchmarks/edit_speed_probe.py`` times both: on one H200 the
    full-size 50-step edit took 10.74 s with value mixing against 11.51 s with the maps formed).
    """

    form_maps: bool = False

    def __init__(self, layer: AttentionLayer, ctx: EditContext, mode: str, mapper: Tensor,
                 alphas: Tensor | None, equalizer: Tensor, blend: "LocalBlend | None" = None) -> None:
        super().__init__(layer)
        self.ctx, self.mode = ctx, mode
        self.mapper, self.alphas, self.equalizer = mapper, alphas, equalizer
        self.blend = blend
        self.base_mix, self.own_weight = self.mixing_matrices(mode, mapper, alphas, equalizer)
        self._on_device: dict[tuple, tuple[Tensor, Tensor | None]] = {}

    @staticmethod
    def mixing_matrices(mode: str, mapper: Tensor, alphas: Tensor | None, equalizer: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(W, w)`` with ``A_e' V = A_r (W V) + A_e (w ⊙ V)`` for Eq. 7's edited map ``A_e'``
        (``w`` None: no ``A_e`` term)."""
        e = equalizer.double()
        if mode == "replace":
            return mapper.double() * e[None, :], None
        a = alphas.double()
        tokens = mapper.shape[0]
        mix = torch.zeros(tokens, tokens, dtype=torch.float64)
        mix[mapper, torch.arange(tokens)] = a * e  # column j: a_j e_j in row mapper_j (one entry per column)
        return mix, e * (1 - a)

    @opaque_to_compiler
    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        ctx, step = self.ctx, self.ctx.clock.step
        control = step in ctx.schedule.cross_steps and self.layer.index in ctx.schedule.cross_layers
        record = self.blend is not None and self.blend.wants(query.shape[2])
        if query.shape[0] != len(ctx.branches) * ctx.num_frames or not (control or record):
            return F.scaled_dot_product_attention(query, key, value)
        f, e = ctx.num_frames, ctx.branches.index("edit_cond")
        q, k, v = (Branches.split(x, ctx.branches) for x in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value)
        if record or self.form_maps:  # the maps themselves, for the two cond branches only
            edited = self.edited_map(attn, q, k, control, record)
            if self.form_maps:
                out[e * f : (e + 1) * f] = edited @ v["edit_cond"]
                return out
        if not control:  # recorded only
            return out
        v_edit = v["edit_cond"]
        where = (v_edit.device, v_edit.dtype)
        if where not in self._on_device:  # copied once, not at every call (a host-to-device copy waits for the host)
            self._on_device[where] = (self.base_mix.to(v_edit), None if self.own_weight is None
                                      else self.own_weight.to(v_edit)[:, None])
        base_mix, own_weight = self._on_device[where]
        edited_out = F.scaled_dot_product_attention(q["recon_cond"], k["recon_cond"], base_mix @ v_edit, scale=attn.scale)
        if own_weight is not None:
            own = own_weight * v_edit
            edited_out = edited_out + F.scaled_dot_product_attention(q["edit_cond"], k["edit_cond"], own, scale=attn.scale)
        out[e * f : (e + 1) * f] = edited_out
        return out

    def edited_map(self, attn, q: Branches, k: Branches, control: bool, record: bool) -> Tensor:  # noqa: ANN001
        """Eq. 7's ``A_e'`` formed explicitly (``A_e`` itself off the control's steps and layers); with ``record``, the
        maps go to the local blend as prompt-to-prompt's store (which aliases the edited maps) sees them."""
        base = torch.softmax(q["recon_cond"] @ k["recon_cond"].transpose(-1, -2) * attn.scale, dim=-1)
        if control and self.mode == "replace":
            edit = (base @ self.mapper.to(base)) * self.equalizer.to(base)
        else:
            edit = torch.softmax(q["edit_cond"] @ k["edit_cond"].transpose(-1, -2) * attn.scale, dim=-1)
            if control:
                a = self.alphas.to(edit)
                edit = (base[..., self.mapper.to(edit.device)] * a + edit * (1 - a)) * self.equalizer.to(edit)
        if record:
            self.blend.record(base, edit)
        return edit


def unet_level_hw(latent_hw: tuple[int, int], level: int) -> tuple[int, int]:
    """Height and width of the UNet's feature maps ``level`` down-samplings below the latent: each stride-2
    convolution rounds up (a 90-row latent gives 45, then 23), so any size that is a multiple of 8 works."""
    h, w = latent_hw
    for _ in range(level):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


class LocalBlend:
    """Prompt-to-prompt local blend: keep the latent outside the words' cross-attention region.

    Maps of the blend words are summed over cross-attention layers at a quarter of the latent
    resolution (``level`` 2) and over steps, max-pooled (3 x 3), normalised per frame and thresholded. The
    blend acts from step ``start_step`` on (prompt-to-prompt's ``start_blend``: its ``step_callback`` blends
    once its counter passes ``int(start_blend · T)``); maps are recorded from step 0.
    """

    def __init__(self, source_tokens: list[int], target_tokens: list[int], latent_hw: tuple[int, int],
                 threshold: float = 0.3, start_step: int = 0, level: int = 2) -> None:
        self.source_tokens, self.target_tokens = source_tokens, target_tokens
        self.latent_hw, self.threshold = latent_hw, threshold
        self.map_hw = unet_level_hw(latent_hw, level)
        self.tokens = self.map_hw[0] * self.map_hw[1]
        self.start_step = start_step
        self.acc: Tensor | None = None

    def wants(self, tokens: int) -> bool:
        return tokens == self.tokens

    def record(self, recon_probs: Tensor, edit_probs: Tensor) -> None:
        # (F, heads, N, 77) -> (F, N) per prompt
        src = recon_probs[..., self.source_tokens].sum(-1).mean(1) if self.source_tokens else 0
        tgt = edit_probs[..., self.target_tokens].sum(-1).mean(1) if self.target_tokens else 0
        m = torch.stack(torch.broadcast_tensors(torch.as_tensor(src, device=edit_probs.device),
                                                torch.as_tensor(tgt, device=edit_probs.device))).float()
        self.acc = m if self.acc is None else self.acc + m

    def mask(self) -> Tensor | None:
        """``(1, 1, F, h, w)`` float mask (1 = may change), or None before any map was recorded."""
        if self.acc is None:
            return None
        h, w = self.latent_hw
        maps = self.acc.reshape(2, -1, 1, *self.map_hw)  # (prompt, F, 1, rows, columns)
        out = []
        for m in maps:
            m = F.max_pool2d(m, 3, 1, padding=1)
            m = F.interpolate(m, size=(h, w))
            m = m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)
            out.append(m > self.threshold)
        mask = (out[0] | out[1]).float()  # (F, 1, h, w)
        return mask.permute(1, 0, 2, 3).unsqueeze(0)

    def apply(self, step: int, z: Tensor, z_ref: Tensor) -> Tensor:
        """After edit step ``step``: ``z_ref + mask (z - z_ref)`` from ``start_step`` on, ``z`` unchanged before it
        or while no map was recorded (prompt-to-prompt's ``x_t[:1] + mask (x_t - x_t[:1])``)."""
        if step < self.start_step or (mask := self.mask()) is None:
            return z
        return z_ref + mask.to(z) * (z - z_ref)


@dataclass
class CrossAttentionEdit:
    """What prompt-to-prompt's cross-attention control takes for one edit (paper Eq. 7): the token mapper (and
    refine's alignment weights ``alphas``), the equalizer, and the local blend when blend words are given."""

    mode: str
    mapper: Tensor
    alphas: Tensor | None
    equalizer: Tensor
    blend: LocalBlend | None


def cross_attention_edit(source_prompt: str, target_prompt: str, tokenizer, mode: str,  # noqa: ANN001
                         equalizer_words: list[str], equalizer_values: list[float],
                         blend_words: tuple[list[str], list[str]], latent_hw: tuple[int, int],
                         blend_threshold: float = 0.3, blend_start_step: int = 0) -> CrossAttentionEdit:
    """Build a :class:`CrossAttentionEdit`: ``replace`` maps token to token, ``refine`` aligns the prompts
    (new tokens take alpha 0); ``blend_words`` are (source words, target words) of the local blend."""
    if mode == "replace":
        mapper, alphas = seq_align.replacement_mapper(source_prompt, target_prompt, tokenizer), None
    else:
        mapper, alphas = seq_align.refinement_mapper(source_prompt, target_prompt, tokenizer)
    eq = seq_align.equalizer(target_prompt, equalizer_words, equalizer_values, tokenizer)
    blend = None
    words_source, words_target = blend_words
    if words_source or words_target:
        st = sorted({i for w in words_source for i in seq_align.word_token_indices(source_prompt, w, tokenizer)})
        tt = sorted({i for w in words_target for i in seq_align.word_token_indices(target_prompt, w, tokenizer)})
        blend = LocalBlend(st, tt, latent_hw, blend_threshold, start_step=blend_start_step)
    return CrossAttentionEdit(mode, mapper, alphas, eq, blend)


class TemporalInjectionProcessor(ControlProcessor):
    """Video-P2P's temporal-attention injection (official code; the paper does not describe it): on ``steps``,
    the edited branch's conditional temporal maps are the source's, ``A_src V_edit``; other rows attend plainly.

    Rows of a temporal layer are ``(branch, pixel)`` over ``ctx.branches`` (the T2S model regroups
    ``(b f) d c -> (b d) f c``), so each branch is one chunk of the batch.
    """

    def __init__(self, layer: AttentionLayer, ctx: EditContext, steps: range) -> None:
        super().__init__(layer)
        self.ctx, self.steps = ctx, steps

    @opaque_to_compiler
    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        ctx = self.ctx
        out = F.scaled_dot_product_attention(query, key, value)
        if ctx.clock.step not in self.steps or query.shape[0] % len(ctx.branches):
            return out
        q, k, v = (Branches.split(x, ctx.branches) for x in (query, key, value))
        parts = Branches.split(out, ctx.branches)
        parts.parts["edit_cond"] = F.scaled_dot_product_attention(q["recon_cond"], k["recon_cond"], v["edit_cond"])
        return parts.join()
