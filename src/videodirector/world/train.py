"""Train the bundled ShapeWorld models like AnimateDiff, in resumable chunks.

Stages (``--stage``):

1. ``vae``: ``AutoencoderKL`` on single frames (L1 + MSE, tiny KL); then the latent scaling
   factor is set to 1 / std of the latents, as SD's 0.18215 was.
2. ``image``: the SD 1.5-layout ``UNet2DConditionModel`` and the ``CLIPTextModel`` from
   scratch on single frames with their captions (ε-prediction, AnimateDiff's linear schedule,
   10 % empty captions for classifier-free guidance), so the result is a working T2I model.
3. ``motion``: a ``MotionAdapter`` on 16-frame clips with the image UNet frozen except its
   cross-attention key/value projections (``cross_kv_names``; ``--no-motion-cross-kv`` freezes them
   too). Unlike AnimateDiff the text encoder is fine-tuned here too: ours was trained from scratch on
   single frames, where motion words carry no signal. A linear probe reading the caption's motion
   from the text encoder's outputs adds its cross-entropy to the loss (``CaptionMotionProbe``,
   ``--motion-probe``) so that direction words reach the UNet; every 1,000 steps the log shows
   ``world.check.direction_preference`` (``motion_eval`` in the model card). The noisiest steps,
   where a sampler picks the direction, are weighted as an x₀ loss (``high_noise_weights``).
4. ``export``: fp16 ``save_pretrained`` into the package (sharded, every file <= 12 MB).

The diffusion losses use min-SNR-5 weights and offset noise (see ``training_noise``). ``--init-from WEIGHTS`` starts from exported weights, and
``--reopen vae,image,motion`` trains those stages further from them (the VAE: decoder only, so the
latent space stays the one the UNet learnt).

Every stage saves a checkpoint at least every ``--save-every`` steps and when ``--minutes`` runs
out, and resumes from it, so each call stays under ten minutes. Seeded: the same command gives
the same data order.

    python -m videodirector.world.train --stage all --out runs/shapeworld --minutes 9
    python -m videodirector.world.train --init-from src/videodirector/world/weights --reopen image,motion \
        --stage all --out runs/more --dest DEST --stage-minutes image=12,motion=10
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.factory import ArchSpec, adapter_config, save_checkpoint, text_config, unet2d_config, vae_config
from ..models.loading import ANIMATEDIFF_SCHEDULER
from ..models.tokenizer import build_clip_tokenizer
from ..diffusion.ddim import NoiseSchedule
from ..io.outputs import staged_entries
from .scene import MOTIONS, WORDS, render, sample_clip

SHAPEWORLD_ARCH = ArchSpec(
    unet_channels=(32, 64, 128, 128), attention_heads=(2, 4, 8, 8), norm_groups=32, text_dim=64, text_layers=4, text_heads=4,
    vae_channels=(64, 128, 128), vae_groups=32, latent_channels=4, motion_heads=(2, 4, 8, 8), sample_size=16, words=WORDS,
)
TRAIN_SEED_OFFSET = 1_000_000  # training clips use seeds >= this; held-out checks use seeds below
STAGE_STEPS = {"vae": 4000, "image": 30000, "motion": 20000}
STAGE_BATCH = {"vae": 64, "image": 512, "motion": 128}
"""Clips per step: the VAE sees 6 frames of each, the image model 8, the motion adapter all 16. Sized for
an H100 (44 GB at these sizes); out of memory, a stage halves its batch and goes on."""
STAGE_MINUTES = {"vae": 1.5, "image": 11.0, "motion": 10.0}
"""A stage ends at its step count or its time budget, whichever comes first; the learning-rate
schedule follows that fraction, so a faster GPU just trains more steps."""


MIN_SNR_GAMMA = 5.0
MOTION_TRAINS_CROSS_KV = True
"""The motion stage also trains the image UNet's cross-attention key/value projections (see ``cross_kv_names``)."""


def cross_kv_names(unet: torch.nn.Module) -> list[str]:
    """Parameters of the spatial cross-attention key/value projections (``attn2.to_k``/``attn2.to_v``).

    Why the motion stage trains them: a motion module sees no text, so a caption's direction ("moving
    left") can reach it only through the image UNet's cross-attention. An image model trained on single
    frames, where direction words carry no signal, learns to ignore them, and with it frozen the
    generated clips moved at the right speed in a direction chosen by the noise (``motion_acc`` 0.11).
    Letting the keys and values of the text tokens train with the motion module gives direction words a
    way in; it is in the spirit of AnimateDiff v3's domain adapter, a LoRA trained on the image model.
    The names are the same in ``UNet2DConditionModel`` and ``UNetMotionModel``."""
    return [n for n, _ in unet.named_parameters()
            if "motion_modules" not in n and (".attn2.to_k." in n or ".attn2.to_v." in n)]


MOTION_STAGE_LR = {"motion": 6e-4, "text": 3e-4, "cross_kv": 3e-4}
"""Peak learning rates of the motion stage's parameter groups (``--motion-lr text=1e-4`` overrides)."""
MOTION_PROBE_WEIGHT = 0.05
"""Weight of the caption-motion probe loss on the text encoder in the motion stage (``CaptionMotionProbe``)."""


class CaptionMotionProbe(torch.nn.Module):
    """A linear read-out of the caption's motion from the mean of the text encoder's 77 output states,
    trained with the motion stage and thrown away afterwards (it is not exported).

    Why: measured on the bundled models (``world.check.direction_preference``), the video model
    denoised a clip equally well whatever direction its caption named (preference 0.0002, against
    about 0.6 for a wrong object colour), and its clips moved wherever the noise led. The text encoder
    trained on single frames had shrunk the direction words to a tenth of a colour word's effect on its
    outputs, and the image UNet's cross-attention hardly looks at them: with both near zero the
    diffusion loss has almost no gradient to grow either. The probe's cross-entropy, weighted by
    ``MOTION_PROBE_WEIGHT``, makes the text encoder carry the direction into the later tokens (the
    background words and padding, which the UNet does attend to), so the motion module gets a signal
    to learn from. Captions dropped for classifier-free guidance are left out of the probe."""

    def __init__(self, dim: int, motions: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(dim, motions)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.head(states.float().mean(1))


OFFSET_NOISE = 0.15
"""Std of the per-(clip, channel) constant added to the training noise (offset noise)."""


def training_noise(z: torch.Tensor, offset: float = OFFSET_NOISE) -> torch.Tensor:
    """ε for the diffusion loss: Gaussian noise plus ``offset`` × one Gaussian constant per clip and
    channel, shared by every frame and pixel (offset noise, Guttenberg 2023).

    Why: AnimateDiff's linear schedule keeps √ᾱ_T ≈ 0.07 of the signal at the last step (Lin et al.
    2024, Sec. 3.1). ShapeWorld backgrounds are large flat colours, so that leak, the latent's mean,
    is the strongest signal left in z_T, and a model trained on plain noise learns to read the
    background colour from the mean of its starting noise instead of from the text (measured: the
    bundled models trained without it drew a teal background for every caption when the starting
    noise had zero mean). With the constant in ε the mean of z_T is mostly noise, so the model learns
    to move it where the text says. ``z``: ``(B, C, H, W)`` or ``(B, C, F, H, W)``."""
    shared = torch.randn(*z.shape[:2], *([1] * (z.ndim - 2)), device=z.device, dtype=z.dtype)
    return torch.randn_like(z) + offset * shared


def min_snr_weights(alphas_cumprod_t: torch.Tensor, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """Min-SNR-γ loss weights for ε-prediction (Hang et al. 2023, eq. 8): ``min(SNR(t), γ) / SNR(t)``
    with ``SNR(t) = ᾱ_t / (1 - ᾱ_t)``. Low-noise steps, which are easy and would dominate the plain
    ε loss, are down-weighted; the paper measures ~3.4x faster convergence."""
    snr = alphas_cumprod_t / (1 - alphas_cumprod_t)
    return snr.clamp(max=gamma) / snr


HIGH_NOISE_WEIGHT = 20.0
"""Cap of the motion stage's high-noise weights (``high_noise_weights``, ``--high-noise-weight``; 0: plain min-SNR)."""


def high_noise_weights(alphas_cumprod_t: torch.Tensor, cap: float = HIGH_NOISE_WEIGHT,
                       gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """Motion-stage loss weights: ``max(min(SNR, γ) / SNR, min(1 / SNR, cap))``.

    The ε loss is the x₀ loss times SNR: ``|ε - ε̂|² = SNR(t) |x₀ - x̂₀|²``. At t = 900 the schedule's
    SNR is 0.014, so how well the model predicts *where the object goes* (the clean clip's mean given
    the caption, which is all that is knowable there) counts 70 times less than at SNR 1, and that is
    where a sampler decides the direction. For SNR < 1 this weights the ε loss by ``1 / SNR``
    (the x₀ loss) up to ``cap``; above it the weights are min-SNR-γ's (``min_snr_weights``)."""
    snr = alphas_cumprod_t / (1 - alphas_cumprod_t)
    base = min_snr_weights(alphas_cumprod_t, gamma)
    return base if cap <= 0 else torch.maximum(base, (1 / snr).clamp(max=cap))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _step_profiler():  # noqa: ANN202
    """Profile motion steps 20-22 and log where the time goes (``--profile``)."""
    from torch.profiler import ProfilerActivity, profile, schedule

    def report(prof) -> None:  # noqa: ANN001
        for key in ("self_cpu_time_total", "self_device_time_total"):
            _log(f"profile by {key}:\n" + prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=50))

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=acts, schedule=schedule(wait=18, warmup=2, active=3, repeat=1), on_trace_ready=report)
    prof.start()
    return prof


class Trainer:
    def __init__(self, out: Path, device: torch.device, minutes: float, seed: int = 0, compile: bool = False,
                 profile: bool = False, motion_cross_kv: bool = MOTION_TRAINS_CROSS_KV,
                 motion_probe: float = MOTION_PROBE_WEIGHT, high_noise_weight: float = HIGH_NOISE_WEIGHT) -> None:
        self.out, self.device, self.seed, self.compile = out, device, seed, compile
        self.motion_cross_kv, self.motion_probe, self.high_noise_weight = motion_cross_kv, motion_probe, high_noise_weight
        earlier = out / "init_steps.json"  # written by init_from_export, before the trainer is built
        self.earlier_steps: dict[str, int] = json.loads(earlier.read_text()) if earlier.is_file() else {}
        """Steps already in reopened weights, per stage (``--reopen``): they offset data seeds and add up in the card."""
        self.profiler = _step_profiler() if profile else None
        self.deadline = time.time() + minutes * 60
        out.mkdir(parents=True, exist_ok=True)
        self.tok_dir = build_clip_tokenizer(WORDS, out / "tokenizer")
        from transformers import CLIPTokenizer

        self.tokenizer = CLIPTokenizer.from_pretrained(self.tok_dir)
        self.schedule = NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER)
        self.acp = self.schedule.alphas_cumprod.float().to(device)
        self.elapsed: dict[str, float] = {}
        self._token_cache: dict[str, torch.Tensor] = {}
        self.started = time.time()
        self.amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    # ---------------------------------------------------------------- data
    def clips(self, step: int, batch: int, stage: str):  # noqa: ANN201
        """Training clips of one step. A reopened stage (``--reopen``) starts its seeds after the
        steps already in its weights, so it sees new clips rather than the earlier run's again."""
        done = self.earlier_steps.get(stage, 0)
        base = TRAIN_SEED_OFFSET + {"vae": 0, "image": 10_000_000, "motion": 20_000_000}[stage] + (step + done) * batch
        specs = [sample_clip(base + i) for i in range(batch)]
        frames, _ = render(specs, self.device)
        return specs, frames

    def tokens(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in set(captions) if c not in self._token_cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids
            self._token_cache.update(zip(missing, ids))
        return torch.stack([self._token_cache[c] for c in captions]).to(self.device)

    def out_of_time(self) -> bool:
        return time.time() > self.deadline

    # ---------------------------------------------------------------- checkpoints
    def frac(self, stage: str, step: int) -> float:
        """Fraction of the stage done: by steps or by its time budget (elapsed includes earlier calls)."""
        elapsed = self.elapsed.get(stage, 0.0) + time.time() - self.started
        return max(step / STAGE_STEPS[stage], elapsed / (60 * STAGE_MINUTES[stage]))

    def save_state(self, stage: str, step: int, modules: dict, opt: torch.optim.Optimizer, ema: dict | None,
                   extra: dict | None = None) -> None:
        state = {**(extra or {}), "step": step, "frac": min(1.0, self.frac(stage, step)),
                 "elapsed": self.elapsed.get(stage, 0.0) + time.time() - self.started, "opt": opt.state_dict(), "modules": {k: m.state_dict() for k, m in modules.items()}}
        if ema is not None:
            state["ema"] = {k: m.state_dict() for k, m in ema.items()}
        tmp = self.out / f".{stage}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / f"{stage}.pt")

    def load_state(self, stage: str) -> dict | None:
        p = self.out / f"{stage}.pt"
        if not p.exists():
            return None
        st = torch.load(p, map_location=self.device, weights_only=False)
        self.elapsed[stage] = st.get("elapsed", 0.0)
        return st

    def done(self, stage: str) -> bool:
        st = self.load_state(stage)
        return st is not None and st.get("frac", 0.0) >= 1.0

    # ---------------------------------------------------------------- builders
    def build(self):  # noqa: ANN201
        from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        a = SHAPEWORLD_ARCH
        torch.manual_seed(self.seed)
        vae = AutoencoderKL(**vae_config(a))
        unet = UNet2DConditionModel(**unet2d_config(a))
        text = CLIPTextModel(CLIPTextConfig(**text_config(a, vocab_size=len(self.tokenizer))))
        adapter = MotionAdapter(**adapter_config(a))
        return vae, unet, text, adapter

    # ---------------------------------------------------------------- stages
    def train_vae(self, vae) -> None:  # noqa: ANN001
        st = self.load_state("vae")
        vae.to(self.device).train()
        # a reopened VAE (``--reopen vae``) trains only its decoder: the latents, and so the
        # image and motion models trained on them, stay valid
        decoder_only = bool(st and st.get("decoder_only"))
        if decoder_only:
            vae.encoder.requires_grad_(False)
            vae.quant_conv.requires_grad_(False)
        params = [p for p in vae.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.0)
        step = 0
        if st:
            vae.load_state_dict(st["modules"]["vae"])
            if st["opt"]:
                opt.load_state_dict(st["opt"])
            step = st["step"]
        extra = {"decoder_only": True} if decoder_only else {}
        total = STAGE_STEPS["vae"]
        t0 = self.started = time.time()
        while self.frac("vae", step) < 1 and not self.out_of_time():
            f = self.frac("vae", step)
            _, frames = self.clips(step, STAGE_BATCH["vae"], "vae")
            x = frames[:, torch.randperm(16, device=self.device)[:6]].flatten(0, 1)
            lr = 3e-4 * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * f)))
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(**self.amp):
                post = vae.encode(x).latent_dist
                rec = vae.decode(post.sample()).sample
            rec = rec.float()
            loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-7 * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 250 == 0:
                psnr = -10 * math.log10(F.mse_loss(rec.detach(), x).item() / 4)
                _log(f"vae step {step}/{total} loss {loss.item():.5f} psnr {psnr:.2f} dB ({time.time() - t0:.0f}s)")
            if step % 1000 == 0:
                self.save_state("vae", step, {"vae": vae}, opt, None, extra)
        self.save_state("vae", step, {"vae": vae}, opt, None, extra)
        if self.frac("vae", step) >= 1 and not decoder_only:  # scaling factor from latent statistics (SD: 0.18215)
            vae.eval()
            with torch.no_grad():
                _, frames = self.clips(10**6, 16, "vae")
                z = vae.encode(frames.flatten(0, 1)).latent_dist.mean
            vae.register_to_config(scaling_factor=float(1.0 / z.std()))
            _log(f"vae done, scaling_factor {vae.config.scaling_factor:.4f}")
            (self.out / "vae_scaling.json").write_text(json.dumps({"scaling_factor": vae.config.scaling_factor}))
        if decoder_only:  # the latent scale the UNet was trained with
            vae.register_to_config(**json.loads((self.out / "vae_scaling.json").read_text()))

    def _diffusion_loss(self, unet, text, z: torch.Tensor, captions: list[str], motion: bool,  # noqa: ANN001
                        probe: CaptionMotionProbe | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        b = z.shape[0]
        drop = torch.rand(b) < 0.1
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        emb = text(self.tokens(captions))[0]
        probe_loss = torch.zeros((), device=z.device)
        if probe is not None and labels is not None and not drop.all():
            keep = ~drop.to(z.device)
            probe_loss = torch.nn.functional.cross_entropy(probe(emb[keep]), labels[keep])
        self.last_probe_loss = probe_loss.detach()
        t = torch.randint(0, 1000, (b,), device=self.device)
        noise = training_noise(z)
        a = self.acp[t].view(-1, *([1] * (z.ndim - 1)))
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        if motion:
            emb = emb.repeat_interleave(z.shape[2], dim=0)
        pred = unet(zt, t, encoder_hidden_states=emb).sample
        per_sample = (pred.float() - noise.float()).pow(2).flatten(1).mean(1)
        weights = high_noise_weights(self.acp[t], self.high_noise_weight) if motion else min_snr_weights(self.acp[t])
        return (weights * per_sample).mean() + self.motion_probe * probe_loss

    def _latents(self, vae, frames: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        with torch.no_grad(), torch.autocast(**self.amp):
            z = vae.encode(frames).latent_dist.sample()
        return z.float() * vae.config.scaling_factor

    def _compiled(self, module: torch.nn.Module):  # noqa: ANN202
        """``torch.compile`` for training forwards (fuses the many small kernels of a small UNet)."""
        return torch.compile(module) if self.compile else module

    def _backward(self, fwd, eager, loss_fn):  # noqa: ANN001, ANN202
        """Forward (under autocast) + backward through ``fwd``; returns ``(loss, forward to use next)``.

        If the compiler fails, log it and return to ``eager``. Out of GPU memory, the loss is ``None``
        (the caller halves its batch); it is never mistaken for a compiler failure."""
        def run(u):  # noqa: ANN001, ANN202
            with torch.autocast(**self.amp):
                loss = loss_fn(u)
            loss.backward()
            return loss

        try:
            return run(fwd), fwd
        except torch.cuda.OutOfMemoryError:
            return None, fwd
        except Exception as exc:  # noqa: BLE001 - a compiler failure must not end a training run
            if fwd is eager:
                raise
            _log(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly")
        try:
            return run(eager), eager
        except torch.cuda.OutOfMemoryError:
            return None, eager

    def _halve_batch(self, stage: str, opt: torch.optim.Optimizer) -> None:
        """Out of GPU memory: drop the step, halve the stage's clips per step and go on."""
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        if STAGE_BATCH[stage] <= 1:
            raise RuntimeError(f"{stage}: out of GPU memory even at one clip per step")
        STAGE_BATCH[stage] //= 2
        _log(f"{stage}: out of GPU memory; now {STAGE_BATCH[stage]} clips per step (set --batch {stage}=N)")

    @staticmethod
    def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
        with torch.no_grad():
            e = [p for p in ema.parameters()]
            m = [p for p in model.parameters()]
            torch._foreach_lerp_(e, m, 1 - decay)

    def train_image(self, vae, unet, text) -> None:  # noqa: ANN001
        st = self.load_state("image")
        vae.to(self.device).eval()
        unet.to(self.device).train()
        text.to(self.device).train()
        params = list(unet.parameters()) + list(text.parameters())
        opt = torch.optim.AdamW(params, lr=8e-4, weight_decay=0.01)
        ema_u, ema_t = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text).requires_grad_(False)
        step = 0
        if st:
            unet.load_state_dict(st["modules"]["unet"])
            text.load_state_dict(st["modules"]["text"])
            ema_u.load_state_dict(st["ema"]["unet"])
            ema_t.load_state_dict(st["ema"]["text"])
            if st["opt"]:
                opt.load_state_dict(st["opt"])
            step = st["step"]
        start = step
        total = STAGE_STEPS["image"]
        fwd = self._compiled(unet)
        t0 = self.started = time.time()
        while self.frac("image", step) < 1 and not self.out_of_time():
            f = self.frac("image", step)
            profile = step % 250 == 10 and self.device.type == "cuda"
            if profile:
                torch.cuda.synchronize()
                tp = time.time()
            specs, frames = self.clips(step, STAGE_BATCH["image"], "image")
            if profile:
                torch.cuda.synchronize()
                _log(f"profile: data {1000 * (time.time() - tp):.1f} ms")
            # the step rate is bound by the host, not the GPU: large batches cost little more time per step
            nb = len(specs)
            pick = torch.randint(0, 16, (nb, 8), device=self.device)
            x = frames[torch.arange(nb, device=self.device)[:, None], pick].flatten(0, 1)
            captions = [s.caption() for s in specs for _ in range(8)]
            z = self._latents(vae, x)
            lr = 8e-4 * min(1.0, (step + 1) / 150) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * f)))
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss, fwd = self._backward(fwd, unet, lambda u: self._diffusion_loss(u, text, z, captions, motion=False))
            if loss is None:  # out of GPU memory
                z = frames = x = None
                self._halve_batch("image", opt)
                continue
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            decay = min(0.995, (1 + step) / (10 + step))  # short runs: ~200-step EMA horizon
            self._ema_update(ema_u, unet, decay)
            self._ema_update(ema_t, text, decay)
            step += 1
            if step % 250 == 0:
                _log(f"image step {step}/{total} loss {loss.item():.4f} ({time.time() - t0:.0f}s, "
                     f"{(step - start) / (time.time() - t0):.2f} steps/s)")
            if step % 1000 == 0:
                self.save_state("image", step, {"unet": unet, "text": text}, opt, {"unet": ema_u, "text": ema_t})
                self._eval_image(step, vae, ema_u, ema_t)
        self.save_state("image", step, {"unet": unet, "text": text}, opt, {"unet": ema_u, "text": ema_t})
        self._eval_image(step, vae, ema_u, ema_t)

    def _eval_image(self, step: int, vae, unet, text) -> None:  # noqa: ANN001
        acc = image_accuracy(vae, unet, text, self.tokenizer, self.device)
        _log(f"image step {step}: EMA model on 64 held-out captions: {acc}")
        with open(self.out / "image_eval.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **acc}) + "\n")

    def train_motion(self, vae, unet2d, text, adapter) -> None:  # noqa: ANN001
        from diffusers import UNetMotionModel

        img = self.load_state("image")
        unet2d.load_state_dict(img["ema"]["unet"])
        text.load_state_dict(img["ema"]["text"])
        st = self.load_state("motion")
        if st:
            adapter.load_state_dict(st["modules"]["adapter"])
            text.load_state_dict(st["modules"]["text"])
        unet = UNetMotionModel.from_unet2d(unet2d, adapter).to(self.device)
        unet.freeze_unet2d_params()
        if st and st.get("cross_kv"):
            unet.load_state_dict(st["cross_kv"], strict=False)
        unet.train()
        text.to(self.device).train()
        vae.to(self.device).eval()
        probe = CaptionMotionProbe(text.config.hidden_size, len(MOTIONS)).to(self.device)
        if st and st.get("probe"):
            probe.load_state_dict(st["probe"])
        motion_params = [p for n, p in unet.named_parameters() if "motion_modules" in n]
        groups = [{"params": motion_params}, {"params": [*text.parameters(), *probe.parameters()]}]
        base_lr = [MOTION_STAGE_LR["motion"], MOTION_STAGE_LR["text"]]
        if self.motion_cross_kv:
            names = set(cross_kv_names(unet))
            cross = [p.requires_grad_(True) for n, p in unet.named_parameters() if n in names]
            groups.append({"params": cross})
            base_lr.append(MOTION_STAGE_LR["cross_kv"])
        opt = torch.optim.AdamW(groups, lr=base_lr[0], weight_decay=0.01)
        trained = [p for g in groups for p in g["params"]]
        step = 0
        if st:
            if st["opt"]:
                opt.load_state_dict(st["opt"])
            step = st["step"]
        start = step
        total = STAGE_STEPS["motion"]
        fwd = self._compiled(unet)
        t0 = self.started = time.time()
        while self.frac("motion", step) < 1 and not self.out_of_time():
            if self.profiler is not None:
                self.profiler.step()
            frac = self.frac("motion", step)
            specs, frames = self.clips(step, STAGE_BATCH["motion"], "motion")
            b, n = frames.shape[:2]
            z = self._latents(vae, frames.flatten(0, 1))
            z = z.unflatten(0, (b, n)).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)
            scale = min(1.0, (step + 1) / 150) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            for g, lr in zip(opt.param_groups, base_lr):
                g["lr"] = lr * scale
            captions = [s.caption() for s in specs]
            labels = torch.tensor([list(MOTIONS).index(s.motion) for s in specs], device=self.device)
            opt.zero_grad(set_to_none=True)
            loss, fwd = self._backward(fwd, unet, lambda u: self._diffusion_loss(
                u, text, z, captions, motion=True, probe=probe if self.motion_probe > 0 else None, labels=labels))
            if loss is None:  # out of GPU memory
                z = frames = None
                self._halve_batch("motion", opt)
                continue
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            step += 1
            if step % 250 == 0:
                _log(f"motion step {step}/{total} loss {loss.item():.4f} probe {self.last_probe_loss.item():.3f} "
                     f"({time.time() - t0:.0f}s, {(step - start) / (time.time() - t0):.2f} steps/s)")
            if step % 1000 == 0:
                self._log_direction_preference(step, vae, unet, text)
                self._save_motion(step, unet, adapter, text, opt, probe)
        self._log_direction_preference(step, vae, unet, text)
        self._save_motion(step, unet, adapter, text, opt, probe)

    def _log_direction_preference(self, step: int, vae, unet, text) -> None:  # noqa: ANN001
        """Log ``world.check.direction_preference`` of the model being trained, and append it to
        ``motion_eval.jsonl`` (copied into the model card), to follow whether captions steer motion."""
        from .check import direction_preference

        was = unet.training, text.training
        unet.eval()
        text.eval()

        def encode(frames: torch.Tensor) -> torch.Tensor:
            return self._latents(vae, frames.to(self.device))[None].permute(0, 2, 1, 3, 4)

        def eps(z: torch.Tensor, t: int, captions: list[str]) -> torch.Tensor:
            with torch.autocast(**self.amp):
                emb = text(self.tokens(captions))[0].repeat_interleave(z.shape[2], dim=0)
                return unet(z, t, encoder_hidden_states=emb).sample

        pref = {k: round(v, 4) for k, v in direction_preference(encode, eps, self.schedule).items()}  # no_grad
        unet.train(was[0])
        text.train(was[1])
        _log(f"motion step {step}: direction preference {pref}")
        with open(self.out / "motion_eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step + self.earlier_steps.get("motion", 0), "direction_preference": pref}) + "\n")

    def _save_motion(self, step: int, unet, adapter, text, opt, probe) -> None:  # noqa: ANN001
        # from_unet2d copies the adapter's weights: the trained ones live in the UNet, so copy them back
        state = unet.state_dict()
        adapter.load_state_dict({k: v for k, v in state.items() if "motion_modules" in k})
        cross = {n: state[n].detach().cpu().clone() for n in cross_kv_names(unet)} if self.motion_cross_kv else {}
        self.save_state("motion", step, {"adapter": adapter, "text": text}, opt, None,
                        {"cross_kv": cross, "probe": probe.state_dict(),
                         "recipe": {"lr": dict(MOTION_STAGE_LR), "probe_weight": self.motion_probe,
                                    "high_noise_weight": self.high_noise_weight}})


@torch.no_grad()
def image_accuracy(vae, unet, text, tokenizer, device: torch.device, n: int = 64, steps: int = 25,  # noqa: ANN001
                   cfg: float = 3.0) -> dict[str, float]:
    """Colour and shape accuracy of single frames generated by the image model from ``n`` held-out
    captions (the rules of ``world.check``), logged during training to follow the image stage."""
    from ..diffusion.ddim import cfg_combine, ddim_sample, leading_timesteps
    from .read import classify

    was_training = unet.training, text.training
    unet.eval()
    text.eval()
    specs = [sample_clip(100 + k, distractor_prob=0.0) for k in range(n)]
    ids = tokenizer([s.caption() for s in specs] + [""], padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.autocast(**amp):
        e = text(ids)[0].float()
    emb = torch.cat([e[n:].expand(n, -1, -1), e[:n]])
    schedule = NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER)

    def eps(z: torch.Tensor, t: int) -> torch.Tensor:
        with torch.autocast(**amp):
            o = unet(torch.cat([z, z]), t, encoder_hidden_states=emb).sample.float()
        return cfg_combine(o[n:], o[:n], cfg)

    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, vae.config.latent_channels, 16, 16, generator=g).to(device)
    z = ddim_sample(eps, z, schedule, leading_timesteps(steps))
    x = vae.decode(z / vae.config.scaling_factor).sample.float().clamp(-1, 1).cpu()
    got = [classify(x[i:i + 1], s.background) for i, s in enumerate(specs)]
    unet.train(was_training[0])
    text.train(was_training[1])
    return {a: sum(g[a] == getattr(s, a) for g, s in zip(got, specs)) / n for a in ("colour", "shape")}


REOPENABLE = ("vae", "image", "motion")


def init_from_export(out: Path, weights: Path, reopen: tuple[str, ...] = ()) -> None:
    """Seed a run folder with exported weights as finished ``vae`` and ``image`` stages (and the text
    encoder), so that ``--stage motion`` trains a new motion adapter on top of them.

    Stages named in ``reopen`` start from the exported weights but train again, with a fresh
    optimiser and learning-rate schedule: ``vae`` fine-tunes only the decoder (the latent space stays
    the one the UNet was trained on), ``image`` continues the image UNet and text encoder, ``motion``
    continues the exported motion adapter. A run folder that already has a stage keeps it (so the same
    command resumes, and nothing trained is replaced)."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel

    out.mkdir(parents=True, exist_ok=True)
    card = json.loads((weights / "training.json").read_text())
    info = card["steps"]
    text = CLIPTextModel.from_pretrained(weights / "sd" / "text_encoder", torch_dtype=torch.float32).state_dict()

    def seed(stage: str, modules, **extra) -> None:  # noqa: ANN001
        f = out / f"{stage}.pt"
        if f.is_file():
            _log(f"--init-from: {f} exists; keeping it")
            return
        if stage in reopen:  # step 0 of a new schedule, starting from these weights
            state = {**extra, "frac": 0.0, "elapsed": 0.0, "opt": {}, "step": 0, "modules": modules()}
        else:
            state = {"frac": 1.0, "elapsed": 0.0, "opt": {}, "step": info[stage], "modules": modules()}
        if stage == "image":
            state["ema"] = state["modules"]
        torch.save(state, f)

    def vae_modules() -> dict:
        vae = AutoencoderKL.from_pretrained(weights / "sd" / "vae", torch_dtype=torch.float32)
        if not (out / "vae_scaling.json").is_file():
            (out / "vae_scaling.json").write_text(json.dumps({"scaling_factor": vae.config.scaling_factor}))
        return {"vae": vae.state_dict()}

    earlier = out / "init_steps.json"  # steps already in the reopened weights, counted in the model card
    if not earlier.is_file():
        earlier.write_text(json.dumps({s: info[s] for s in reopen}))
    for name in ("image_eval", "motion_eval"):  # the card's evaluation history goes on in the new card
        log = out / f"{name}.jsonl"
        if card.get(name) and not log.is_file():
            log.write_text("".join(json.dumps(e) + "\n" for e in card[name]))
    seed("vae", vae_modules, decoder_only=True)
    seed("image", lambda: {"unet": UNet2DConditionModel.from_pretrained(weights / "sd" / "unet", torch_dtype=torch.float32).state_dict(),
                           "text": text})
    if "motion" in reopen:
        seed("motion", lambda: {"adapter": MotionAdapter.from_pretrained(weights / "motion_adapter", torch_dtype=torch.float32).state_dict(),
                                "text": text})


def export(out: Path, dest: Path) -> dict:
    """Write fp16 diffusers folders (``dest/sd``, ``dest/motion_adapter``) and a model card."""
    tr = Trainer(out, torch.device("cpu"), minutes=1)
    vae, unet, text, adapter = tr.build()
    vae.load_state_dict(tr.load_state("vae")["modules"]["vae"])
    vae.register_to_config(**json.loads((out / "vae_scaling.json").read_text()))
    img = tr.load_state("image")
    unet.load_state_dict(img["ema"]["unet"])
    mot = tr.load_state("motion")
    if mot.get("cross_kv"):  # the image UNet's cross-attention keys/values, trained with the motion module
        missing, unexpected = unet.load_state_dict(mot["cross_kv"], strict=False)
        assert not unexpected, unexpected
    adapter.load_state_dict(mot["modules"]["adapter"])
    text.load_state_dict(mot["modules"]["text"])
    for m in (vae, unet, text, adapter):
        m.half()
    with staged_entries(dest) as tmp:  # replaces sd/, motion_adapter/ and training.json only (weights/ holds i2v/ too)
        base, ad = save_checkpoint(tmp, unet, adapter, vae, text, WORDS)
        for f in [*(base / "unet").glob("*.safetensors"), *ad.glob("*.safetensors")]:
            f.unlink()
        # re-save the big ones sharded so each file stays <= 12 MB (package-data limit of 15 MB)
        unet.save_pretrained(base / "unet", max_shard_size="12MB")
        adapter.save_pretrained(ad, max_shard_size="12MB")
        info = {"steps": {s: tr.load_state(s)["step"] + tr.earlier_steps.get(s, 0) for s in ("vae", "image", "motion")},
                "params_m": {"unet2d": sum(p.numel() for p in unet.parameters()) / 1e6,
                             "motion_adapter": sum(p.numel() for p in adapter.parameters()) / 1e6,
                             "vae": sum(p.numel() for p in vae.parameters()) / 1e6,
                             "text_encoder": sum(p.numel() for p in text.parameters()) / 1e6},
                "loss": {"prediction": "epsilon", "min_snr_gamma": MIN_SNR_GAMMA, "offset_noise": OFFSET_NOISE},
                "motion_stage_trains_cross_kv": bool(mot.get("cross_kv")), "motion_stage_recipe": mot.get("recipe")}
        for name in ("image_eval", "motion_eval"):  # accuracy / direction preference logged during training
            if (out / f"{name}.jsonl").is_file():
                info[name] = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m videodirector.world.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["t2v", "i2v"], default="t2v",
                   help="t2v: the text-to-video models (SD 1.5 + motion adapter); i2v: the image-to-video model in "
                        "Stable Video Diffusion's layout (world.train_i2v; stages vae, video, export)")
    p.add_argument("--stage", choices=["vae", "image", "motion", "video", "export", "all"], default="all")
    p.add_argument("--out", type=Path, default=Path("runs/shapeworld"), help="checkpoint folder (resumable)")
    p.add_argument("--dest", type=Path, default=None, help="export folder (default: the package's weights/, "
                   "weights/i2v with --model i2v)")
    p.add_argument("--tiny", action="store_true", help="--model i2v: toy widths (a CPU check of the code path)")
    p.add_argument("--frames", type=int, default=16, help="--model i2v: frames per training clip")
    p.add_argument("--minutes", type=float, default=9.0, help="time budget of this call; saves and stops after it")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=str, default="", help="override stage steps, e.g. vae=100,image=100,motion=100")
    p.add_argument("--batch", type=str, default="", help="override clips per step, e.g. image=64,motion=24")
    p.add_argument("--stage-minutes", type=str, default="", help="override stage time budgets, e.g. image=3.5")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the UNet forwards (measured on an H100: ~3 min to compile, no faster after)")
    p.add_argument("--profile", action="store_true", help="log a profile of three motion steps")
    p.add_argument("--motion-cross-kv", action=argparse.BooleanOptionalAction, default=MOTION_TRAINS_CROSS_KV,
                   help="the motion stage also trains the image UNet's cross-attention keys/values (how caption "
                        "directions reach the motion module)")
    p.add_argument("--motion-lr", type=str, default="",
                   help="override the motion stage's peak learning rates, e.g. motion=6e-4,text=3e-4,cross_kv=3e-4")
    p.add_argument("--motion-probe", type=float, default=MOTION_PROBE_WEIGHT,
                   help="weight of the caption-motion probe loss on the text encoder (0 turns it off)")
    p.add_argument("--high-noise-weight", type=float, default=HIGH_NOISE_WEIGHT,
                   help="motion stage: weight the noisiest steps by 1/SNR up to this cap (the x0 loss; "
                        "see high_noise_weights; 0: plain min-SNR)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="exported weights folder to start from (its VAE, image UNet and text encoder count as trained)")
    p.add_argument("--reopen", type=str, default="",
                   help="with --init-from: stages to train further from the exported weights, e.g. vae,image,motion "
                        "(vae: decoder only)")
    args = p.parse_args(argv)
    if args.dest is None:
        args.dest = Path(__file__).parent / "weights" / ("i2v" if args.model == "i2v" else "")
    if args.model == "i2v":
        from .train_i2v import run

        run(args)
        return
    if args.stage == "video":
        p.error("--stage video belongs to --model i2v; the text-to-video stages are vae, image, motion, export")
    for table, spec, cast in ((STAGE_STEPS, args.steps, int), (STAGE_BATCH, args.batch, int),
                              (STAGE_MINUTES, args.stage_minutes, float), (MOTION_STAGE_LR, args.motion_lr, float)):
        for kv in filter(None, spec.split(",")):  # "image=64,motion=24"
            k, _, v = kv.partition("=")
            if k not in table:
                p.error(f"unknown key {k!r} in {kv!r}; choose from {list(table)}")
            table[k] = cast(v)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    reopen = tuple(filter(None, args.reopen.split(",")))
    if unknown := set(reopen) - set(REOPENABLE):
        p.error(f"--reopen: unknown stage(s) {sorted(unknown)}; choose from {list(REOPENABLE)}")
    if reopen and args.init_from is None:
        p.error("--reopen needs --init-from WEIGHTS (the exported weights to continue from)")
    if args.init_from is not None:
        init_from_export(args.out, args.init_from, reopen)
    tr = Trainer(args.out, torch.device(args.device), args.minutes, args.seed, args.compile, args.profile,
                 args.motion_cross_kv, args.motion_probe, args.high_noise_weight)
    vae, unet, text, adapter = tr.build()
    stages = ["vae", "image", "motion", "export"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "export":
            if all(tr.done(s) for s in ("vae", "image", "motion")):
                _log(f"exported: {export(args.out, args.dest)}")
            else:
                _log("not exporting: training not finished (run again to resume)")
            continue
        if tr.done(stage):
            _log(f"{stage}: already done")
            if stage == "vae":
                vae.load_state_dict(tr.load_state("vae")["modules"]["vae"])
                vae.register_to_config(**json.loads((args.out / "vae_scaling.json").read_text()))
            continue
        if tr.out_of_time():
            break
        _log(f"{stage}: training")
        if stage == "vae":
            tr.train_vae(vae)
        elif stage == "image":
            tr.train_image(vae, unet, text)
        else:
            tr.train_motion(vae, unet, text, adapter)
        if not tr.done(stage):
            _log(f"{stage}: stopped at the time budget; run again to resume")
            break


if __name__ == "__main__":
    main()
