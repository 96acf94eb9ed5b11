"""Train the bundled ShapeWorld image-to-video model: Stable Video Diffusion's classes and folder layout,
trained like SVD, in resumable chunks (``python -m videodirector.world.train --model i2v``).

Stages (``--stage``):

1. ``vae``: ``AutoencoderKLTemporalDecoder``. Its encoder is SD's ``Encoder``, the architecture of the
   bundled text-to-video VAE, so the encoder (and ``quant_conv``) and the latent scaling factor are copied
   from the bundled VAE and kept frozen: the latent space is the one the ShapeWorld models already use.
   Only the temporal decoder trains (L1 + MSE on 16-frame clips).
2. ``video``: the ``UNetSpatioTemporalConditionModel`` and a small ``CLIPVisionModelWithProjection``, trained
   together from scratch on clips conditioned on their first frame, with SVD's objective: EDM with
   v-prediction at σ_data = 1 (``D = x/(σ²+1) - v σ/√(σ²+1)``), σ from the interpolated-cosine log-SNR
   distribution (the one the official I2VEdit LoRA training uses), loss ``λ(σ)|D - z₀|²`` with
   ``λ = (σ²+1)/σ²``; conditioning as SVD: CLIP embedding of the first frame, the VAE mode of the first frame
   plus ``aug·ε`` in pixels concatenated to every frame, time ids ``[fps - 1, 127, aug]`` with
   ``aug ~ LogNormal(-3, 0.5)`` (SVD's range, 0.02 typical); both conditions dropped together 10 % of the
   time for classifier-free guidance.
3. ``export``: fp16 ``save_pretrained`` in SVD's layout (``unet/``, ``vae/``, ``image_encoder/``,
   ``feature_extractor/``, ``scheduler/``; every file <= 12 MB) into ``world/weights/i2v``.

Each call trains at most ``--minutes`` and saves; the same command resumes. The real run needs a GPU;
``--tiny`` runs the same code at toy sizes on a CPU (what the tests and the docs' check use).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..diffusion.edm import denoised, loss_weight, scale_model_input, training_sigmas
from ..models.svd_factory import (
    SVDArch, build_svd_models, save_svd_checkpoint, unet_config, vae_config, vision_config,
)
from ..io.outputs import staged_entries
from .scene import render, sample_clip

SHAPEWORLD_I2V_ARCH = SVDArch(
    unet_channels=(64, 96, 96, 96), attention_heads=(2, 3, 3, 3), time_id_dim=32, embed_dim=64, vision_width=64,
    vision_layers=2, vision_heads=2, image_size=64, vae_channels=(64, 128, 128), vae_layers=1, latent_channels=4,
    sample_size=16, num_frames=16,
)
"""The bundled model: the VAE's encoder has the bundled text-to-video VAE's architecture (64, 128, 128 and
one layer per block), so its weights carry over. 18.6 M parameters (UNet 14.4 M, VAE 4.0 M, image encoder
0.15 M): 37 MB in fp16, beside the text-to-video models' 34 MB within the 80 MB budget."""
TINY_I2V_ARCH = SVDArch(unet_channels=(32, 32, 32, 32), attention_heads=(1, 1, 1, 1), time_id_dim=8, embed_dim=32,
                        vision_width=32, vision_layers=1, vision_heads=1, image_size=32, vae_channels=(64, 128, 128),
                        vae_layers=1, latent_channels=4, sample_size=16, num_frames=16)
STEPS = {"vae": 2000, "video": 20000}
BATCH = {"vae": 16, "video": 64}
MINUTES = {"vae": 2.0, "video": 25.0}
LR = {"vae": 3e-4, "video": 4e-4}
TRAIN_SEED_OFFSET = 30_000_000  # clips of this model's training; the checks use seeds below 1,000,000
FPS = 7
COND_DROP = 0.1


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def noise_aug_strengths(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SVD's conditioning-noise strengths: ``exp(N(-3, 0.5²))`` (median 0.05; 0.02 is I2VEdit's fixed value)."""
    return torch.exp(-3.0 + 0.5 * torch.randn(n, generator=generator))


class I2VTrainer:
    """Trains one ShapeWorld image-to-video model in ``out`` (resumable checkpoints ``vae.pt``, ``video.pt``)."""

    def __init__(self, out: Path, device: torch.device, minutes: float, arch: SVDArch = SHAPEWORLD_I2V_ARCH,
                 t2v_weights: Path | None = None, frames: int = 16, seed: int = 0) -> None:
        self.out, self.device, self.arch, self.frames, self.seed = out, device, arch, frames, seed
        self.deadline = time.time() + 60 * minutes
        self.t2v_weights = t2v_weights
        out.mkdir(parents=True, exist_ok=True)
        self.amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def out_of_time(self) -> bool:
        return time.time() > self.deadline

    # ------------------------------------------------------------------ data and checkpoints

    def clips(self, step: int, stage: str) -> torch.Tensor:
        """``(B, F, 3, 64, 64)`` ShapeWorld clips in [-1, 1], seeded by stage and step."""
        base = TRAIN_SEED_OFFSET + {"vae": 0, "video": 10_000_000}[stage] + step * BATCH[stage]
        frames, _ = render([sample_clip(base + i, frames=self.frames) for i in range(BATCH[stage])], self.device)
        return frames

    def save(self, stage: str, step: int, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer,
             elapsed: float) -> None:
        state = {"step": step, "elapsed": elapsed, "opt": opt.state_dict(),
                 "modules": {k: m.state_dict() for k, m in modules.items()}}
        tmp = self.out / f".{stage}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / f"{stage}.pt")

    def load(self, stage: str) -> dict | None:
        p = self.out / f"{stage}.pt"
        return torch.load(p, map_location=self.device, weights_only=False) if p.is_file() else None

    def done(self, stage: str) -> bool:
        st = self.load(stage)
        return st is not None and (st["step"] >= STEPS[stage] or st["elapsed"] >= 60 * MINUTES[stage])

    def build(self):  # noqa: ANN201
        unet, vae, image_encoder, processor = build_svd_models(self.arch, self.seed)
        return unet.to(self.device), vae.to(self.device), image_encoder.to(self.device), processor

    def init_encoder(self, vae: torch.nn.Module) -> None:
        """Copy the bundled text-to-video VAE's encoder, ``quant_conv`` and scaling factor (same architecture)."""
        if self.t2v_weights is None:
            return
        from diffusers import AutoencoderKL

        t2v = AutoencoderKL.from_pretrained(self.t2v_weights / "sd" / "vae", torch_dtype=torch.float32)
        vae.encoder.load_state_dict(t2v.encoder.state_dict())
        vae.quant_conv.load_state_dict(t2v.quant_conv.state_dict())
        vae.register_to_config(scaling_factor=float(t2v.config.scaling_factor))

    # ------------------------------------------------------------------ stages

    def train_vae(self, vae: torch.nn.Module) -> None:
        """The temporal decoder, on frozen encoder latents (L1 + MSE)."""
        self.init_encoder(vae)
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
        params = [p for p in vae.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR["vae"], weight_decay=0.0)
        st = self.load("vae")
        step, elapsed = 0, 0.0
        if st:
            vae.load_state_dict(st["modules"]["vae"])
            opt.load_state_dict(st["opt"])
            step, elapsed = st["step"], st["elapsed"]
        t0 = time.time()
        vae.train()
        while step < STEPS["vae"] and elapsed + time.time() - t0 < 60 * MINUTES["vae"] and not self.out_of_time():
            x = self.clips(step, "vae").flatten(0, 1)
            with torch.no_grad(), torch.autocast(**self.amp):
                z = vae.encode(x).latent_dist.sample()
            with torch.autocast(**self.amp):
                rec = vae.decode(z.float(), num_frames=self.frames).sample.float()
            loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 100 == 0 or step == 1:
                _log(f"vae step {step}/{STEPS['vae']} loss {loss.item():.5f}")
        self.save("vae", step, {"vae": vae}, opt, elapsed + time.time() - t0)

    def video_loss(self, unet, vae, image_encoder, frames: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # noqa: ANN001
        """SVD's objective on clips ``(B, F, 3, H, W)``: EDM v-prediction, interpolated-cosine σ, λ(σ) weights."""
        b, f = frames.shape[:2]
        scale = float(vae.config.scaling_factor)
        first = frames[:, 0]
        aug = noise_aug_strengths(b, g).to(self.device)
        with torch.no_grad(), torch.autocast(**self.amp):
            z0 = vae.encode(frames.flatten(0, 1)).latent_dist.sample().float().unflatten(0, (b, f)) * scale
            cond = vae.encode(first + aug.view(b, 1, 1, 1) * torch.randn(first.shape, generator=g).to(first)
                              ).latent_dist.mode().float()
        size = image_encoder.config.image_size
        clip_in = F.interpolate(first, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        emb = image_encoder(clip_in).image_embeds.unsqueeze(1)
        keep = (torch.rand(b, generator=g) >= COND_DROP).to(self.device).float()
        emb = emb * keep.view(b, 1, 1)
        cond = cond * keep.view(b, 1, 1, 1)
        sigma = training_sigmas(torch.rand(b, generator=g)).to(self.device).float()
        s5 = sigma.view(b, 1, 1, 1, 1)
        z = z0 + s5 * torch.randn(z0.shape, generator=g).to(z0)
        x_in = torch.cat([scale_model_input(z, s5), cond[:, None].expand(b, f, *cond.shape[1:])], dim=2)
        tid = torch.stack([torch.full_like(aug, FPS - 1), torch.full_like(aug, 127.0), aug], dim=1)
        with torch.autocast(**self.amp):
            v = unet(x_in, 0.25 * sigma.log(), encoder_hidden_states=emb, added_time_ids=tid).sample.float()
        d = denoised(v, z, s5)
        w = loss_weight(sigma.double()).float().view(b, 1, 1, 1, 1)
        return (w * (d - z0) ** 2).mean()

    def train_video(self, unet, vae, image_encoder) -> None:  # noqa: ANN001
        vae.requires_grad_(False).eval()
        params = [*unet.parameters(), *image_encoder.parameters()]
        opt = torch.optim.AdamW(params, lr=LR["video"], weight_decay=0.01)
        st = self.load("video")
        step, elapsed = 0, 0.0
        if st:
            unet.load_state_dict(st["modules"]["unet"])
            image_encoder.load_state_dict(st["modules"]["image_encoder"])
            opt.load_state_dict(st["opt"])
            step, elapsed = st["step"], st["elapsed"]
        unet.train()
        image_encoder.train()
        t0 = time.time()
        while step < STEPS["video"] and elapsed + time.time() - t0 < 60 * MINUTES["video"] and not self.out_of_time():
            frac = max(step / STEPS["video"], (elapsed + time.time() - t0) / (60 * MINUTES["video"]))
            for grp in opt.param_groups:
                grp["lr"] = LR["video"] * min(1.0, (step + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            loss = self.video_loss(unet, vae, image_encoder, self.clips(step, "video"), g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 100 == 0 or step == 1:
                _log(f"video step {step}/{STEPS['video']} loss {loss.item():.5f} ({time.time() - t0:.0f}s)")
            if step % 1000 == 0:
                self.save("video", step, {"unet": unet, "image_encoder": image_encoder}, opt, elapsed + time.time() - t0)
        self.save("video", step, {"unet": unet, "image_encoder": image_encoder}, opt, elapsed + time.time() - t0)

    def export(self, dest: Path) -> dict:
        """fp16 folders in SVD's layout, each file <= 12 MB, and a model card ``training.json``."""
        unet, vae, image_encoder, processor = self.build()
        vae.load_state_dict(self.load("vae")["modules"]["vae"])
        self.init_encoder(vae)  # the scaling factor (and the same frozen encoder)
        video = self.load("video")
        unet.load_state_dict(video["modules"]["unet"])
        image_encoder.load_state_dict(video["modules"]["image_encoder"])
        for m in (unet, vae, image_encoder):
            m.half()
        card = {"steps": {s: self.load(s)["step"] for s in ("vae", "video")},
                "params_m": {"unet": sum(p.numel() for p in unet.parameters()) / 1e6,
                             "vae": sum(p.numel() for p in vae.parameters()) / 1e6,
                             "image_encoder": sum(p.numel() for p in image_encoder.parameters()) / 1e6},
                "objective": "EDM v-prediction, sigma_data 1, interpolated-cosine sigma, weight (s^2+1)/s^2",
                "conditioning": {"fps_id": FPS - 1, "motion_bucket_id": 127, "noise_aug": "exp(N(-3, 0.5^2))",
                                 "cond_drop": COND_DROP},
                "vae_encoder": "copied from the bundled text-to-video VAE, frozen" if self.t2v_weights else "random",
                "configs": {"unet": unet_config(self.arch), "vae": vae_config(self.arch),
                            "image_encoder": vision_config(self.arch)}}
        with staged_entries(dest) as tmp:  # replaces only the entries it writes; the rest of dest stays
            save_svd_checkpoint(tmp, unet, vae, image_encoder, processor, max_shard_size="12MB")
            (tmp / "training.json").write_text(json.dumps(card, indent=2))
        return card


def run(args) -> None:  # noqa: ANN001
    """``world.train --model i2v``: the stages in order, each resumable; export when both are done."""
    arch = TINY_I2V_ARCH if args.tiny else SHAPEWORLD_I2V_ARCH
    for table, spec, cast in ((STEPS, args.steps, int), (BATCH, args.batch, int), (MINUTES, args.stage_minutes, float)):
        for kv in filter(None, spec.split(",")):
            k, _, v = kv.partition("=")
            if k not in table:
                raise SystemExit(f"--model i2v: unknown stage {k!r} in {kv!r}; choose from {list(table)}")
            table[k] = cast(v)
    weights = Path(__file__).parent / "weights"
    t2v = args.init_from or (weights if (weights / "sd" / "vae" / "config.json").is_file() else None)
    tr = I2VTrainer(args.out, torch.device(args.device), args.minutes, arch, t2v, frames=args.frames, seed=args.seed)
    unet, vae, image_encoder, _ = tr.build()
    stages = ["vae", "video", "export"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "export":
            if tr.done("vae") and tr.done("video"):
                _log(f"exported: {tr.export(args.dest)}")
            else:
                _log("not exporting: training not finished (run again to resume)")
            continue
        if stage not in STEPS:
            raise SystemExit(f"--model i2v has the stages vae, video, export (got {stage!r})")
        if tr.done(stage):
            _log(f"{stage}: already done")
            if stage == "vae":
                vae.load_state_dict(tr.load("vae")["modules"]["vae"])
                tr.init_encoder(vae)
            continue
        if tr.out_of_time():
            break
        _log(f"{stage}: training")
        if stage == "vae":
            tr.train_vae(vae)
        else:
            if tr.load("vae"):
                vae.load_state_dict(tr.load("vae")["modules"]["vae"])
            tr.init_encoder(vae)
            tr.train_video(unet, vae, image_encoder)
        if not tr.done(stage):
            _log(f"{stage}: stopped at the time budget; run again to resume")
            break
