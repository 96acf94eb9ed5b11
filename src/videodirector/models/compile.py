"""Regional ``torch.compile`` of the UNet (``model.compile``).

Compiling the whole ``UNetMotionModel`` does not work for attention control: the control
processors are Python objects whose state (the step's phase, the layer's place in the schedule,
the recorder's switches) becomes part of every guard, so each attention layer and each phase
recompiles until PyTorch gives up and runs eagerly (measured on the tiny model with
``TORCH_LOGS=recompiles``). Instead, blocks are compiled one by one, as diffusers'
``compile_repeated_blocks`` does for transformer blocks:

* ``ResnetBlock2D``: GroupNorm, SiLU, convolutions, the time-embedding add and the skip;
* ``FeedForward``: the GEGLU MLP of every spatial and temporal transformer block;
* ``BasicTransformerBlock``: the spatial (and temporal) transformer blocks: norms, projections, residuals.
  A stage-2 control processor's ``attend`` is opaque to the compiler
  (:func:`~videodirector.attention.processors.opaque_to_compiler`): the block's compiled code stops before it
  and resumes after it, so its per-step state never enters a guard. The block is the unit, not
  ``Transformer2DModel``: a break inside the latter's loop over blocks would send the whole model back to eager;
* ``AnimateDiffTransformer3D``: a motion module with the reshapes around its temporal attention.
  Its attention is never controlled in stage 2; in STDG's recording forwards, which read attention
  maps and keys, the blocks with attention run eagerly and the others compiled (:func:`attention_blocks_eager`).

On one H200 (16 x 512^2, bf16, ``benchmarks/edit_speed_probe.py --parts scopes``, default processors) a UNet forward
of four clips took 0.0737 s a clip eager, 0.0584 with resnets, feed-forwards and motion modules compiled, and 0.0517
with the spatial ``Transformer2DModel`` s compiled too, as fast as the whole UNet as one graph (0.0517).

Shapes are static (``dynamic=False``): each block configuration compiles once per batch layout
and grad mode, and the recompile limit is raised so that none falls back to eager.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import UserError

COMPILED_BLOCKS = ("ResnetBlock2D", "FeedForward", "BasicTransformerBlock", "AnimateDiffTransformer3D")
BLOCKS_WITH_ATTENTION = ("BasicTransformerBlock", "AnimateDiffTransformer3D")
"""Compiled blocks that hold an attention layer, whose processor may record from inside."""
_compiled_with_attention: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
RECOMPILE_LIMIT = 256
"""Compiled variants allowed per block class: SD 1.5 has 15 resnet configurations, times batch layouts
(1, 3 or 4 branches) and grad modes; PyTorch's default of 8 would send most of them back to eager."""


def compile_blocks(unet: torch.nn.Module, blocks: tuple[str, ...] = COMPILED_BLOCKS, **compile_kwargs) -> int:
    """``torch.compile`` every sub-module of ``unet`` whose class name is in ``blocks``; returns how many.

    Parameters stay shared with ``unet`` (``nn.Module.compile`` wraps the call, not the weights), so
    loading, freezing and processors work as before. ``compile_kwargs`` go to ``torch.compile``."""
    if not hasattr(torch.compiler, "set_stance"):
        raise UserError(f"model.compile needs PyTorch 2.6 or newer (this is {torch.__version__}); "
                        "upgrade torch or run without --compile")
    dynamo = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in PyTorch 2.7
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))
    if hasattr(dynamo, "accumulated_recompile_limit"):
        dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 8 * RECOMPILE_LIMIT)
    compile_kwargs.setdefault("dynamic", False)
    count = 0
    for module in unet.modules():
        if type(module).__name__ in blocks:
            module.compile(**compile_kwargs)
            if type(module).__name__ in BLOCKS_WITH_ATTENTION:
                _compiled_with_attention.add(module)
            count += 1
    return count


@contextmanager
def attention_blocks_eager() -> Iterator[None]:
    """Run the compiled blocks that hold attention (transformer blocks, motion modules) eagerly and leave the others
    compiled: for forwards whose attention processors store features from inside or end the forward
    early, which compiled code cannot do. ``nn.Module.compile`` keeps the compiled call in
    ``_compiled_call_impl``; without it the module runs its eager ``_call_impl``."""
    held = [(m, m._compiled_call_impl) for m in list(_compiled_with_attention)]
    for m, _ in held:
        m._compiled_call_impl = None
    try:
        yield
    finally:
        for m, compiled in held:
            m._compiled_call_impl = compiled


@contextmanager
def eager() -> Iterator[None]:
    """Run the enclosed forwards without any compiled code (benchmarks that time the eager path beside the
    compiled one; recording forwards need only :func:`attention_blocks_eager`).

    ``torch.compiler.set_stance`` came with PyTorch 2.6; before it, ``compile_blocks`` refuses to run,
    so there is nothing compiled to step around."""
    if not hasattr(torch.compiler, "set_stance"):
        yield
        return
    with torch.compiler.set_stance("force_eager"):
        yield
