"""The ShapeWorld benchmark: a fixed, versioned suite, a resumable runner and a report.

Results layout (``results/<suite>/``): ``cases/<method>/<case>.json`` written as each case completes
(re-runs skip them), ``<method>.json`` per method, ``summary.json`` shaped
``{method: {metric: {"mean": x, "std": y}}}``, ``report.md`` with bar charts and qualitative strips.
Adding a method is one :func:`~videodirector.methods.base.register` call.
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..api import (BUNDLED_GUIDANCE_SCALE, BUNDLED_WEIGHTS, Editor, bundled_model_config, inversion_settings,
                   method_config)
from ..config import EditConfig, apply_overrides
from ..errors import UserError
from ..io.outputs import atomic_write_bytes, to_uint8, write_json
from ..methods.base import METHODS, MODEL_LOADERS, Progress, no_progress
from ..world.evaluate import reconstruction_psnr, score_edit
from ..world.scene import BACKGROUND_COLOURS, MOTIONS, OBJECT_COLOURS, SHAPES, TEXTURES, ClipSpec, render, sample_clip

METRICS = ("gt_psnr", "gt_ssim", "background_psnr", "preserved_psnr", "edit_accuracy", "trajectory_error_px",
           "reconstruction_psnr", "flicker")
LOWER_IS_BETTER = {"trajectory_error_px", "flicker"}
BACKGROUND_COEFFICIENTS = [0.5, 0.5, 0.5, 0.0]  # [eta_f, eta_b, zeta_f, zeta_b] swapped for background edits
BACKGROUND_COEFFICIENTS_BY_METHOD = {"vd-bg-no-appearance": [0.5, 0.5, 0.0, 0.0]}
"""Methods that differ from ``videodirector`` only in the STDG coefficients of background and texture
cases. ``vd-bg-no-appearance`` drops the appearance term on the object (``zeta_f = 0``), which
``benchmarks/stdg_background_probe.py`` found to cost background-edit reconstructions 6 to 15 dB."""
_RENOISE, _NO_ROOM = {"control.mask_blend_renoise": True}, {"control.mask_blend_dilation": 0}
OVERRIDES_BY_METHOD_AND_KIND = {
    "vd-mask-blend": {"texture": _RENOISE},
    "vd-mask-blend-dilated": {"texture": _RENOISE},
    "vd-mask-blend-per-edit": {"colour": _NO_ROOM, "background": _NO_ROOM, "texture": {**_RENOISE, **_NO_ROOM}},
}
"""Settings a method takes on one kind of case only, as a user picks flags per edit (``--renoise`` for a
new pattern). ``vd-mask-blend`` (and its two siblings) starts the background of texture edits from
fresh noise: the inverted z_T keeps the source's pattern (texture edits failed for every method without it);
on background-colour edits fresh noise would lose the pattern's phase (CPU probe: gt_psnr 22.1 -> 15.0 dB).
``vd-mask-blend-per-edit`` leaves a new shape one latent pixel of room and a new colour none, as the
method page advises. A key here wins over the same key in the method's registered settings."""


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # colour | shape | background | texture
    source: ClipSpec
    change: dict[str, str]

    @property
    def target(self) -> ClipSpec:
        return self.source.edited(**self.change)


SUITE_SEEDS = {"shapeworld-v1": 5000, "shapeworld-v2": 5000, "shapeworld-v2-holdout": 6000}
"""The suites, each with its first clip seed: case ``i`` draws its source clip from seed ``first + i``."""
SUITES = tuple(SUITE_SEEDS)
DEFAULT_SUITE = "shapeworld-v2"


def shapeworld_suite(name: str = DEFAULT_SUITE) -> list[Case]:
    """36 cases: 12 colour swaps, 12 shape swaps, 12 background edits (8 colour, 4 texture), spread over
    all 10 motions. Deterministic; a new version is a new name, so stored results never change meaning.

    * ``shapeworld-v1``: the background edits draw their source texture with the same index that picks
      texture edits, so all 4 texture edits are gradient -> striped and no background-colour edit has
      a gradient background.
    * ``shapeworld-v2`` (default): the same colour and shape cases; background-colour edits over all 3
      source textures, and texture edits striped -> checkered, checkered -> gradient, gradient ->
      striped, striped -> gradient.
    * ``shapeworld-v2-holdout``: ``shapeworld-v2``'s recipe on a second seed range (6000-6035), drawn to check
      that figures tuned on the suite hold elsewhere: other colours, shapes, positions and backgrounds."""
    if name not in SUITES:
        raise UserError(f"unknown suite {name!r}; available: {', '.join(SUITES)}")
    motions, colours, bgs = list(MOTIONS), list(OBJECT_COLOURS), list(BACKGROUND_COLOURS)
    cases = []
    for i in range(36):
        kind = ("colour", "shape", "background")[i // 12]
        if kind == "background" and i % 3 == 2:
            kind = "texture"
        texture = TEXTURES[i % 3]
        k = (i - 24) // 3  # v2: 0..3 within the background group
        if name != "shapeworld-v1" and kind in ("background", "texture"):
            texture = TEXTURES[k % 3] if kind == "texture" else TEXTURES[(i + k) % 3]
        src = sample_clip(SUITE_SEEDS[name] + i, motion=motions[i % len(motions)], texture=texture, distractor_prob=0.0)
        if kind == "colour":
            change = {"colour": colours[(colours.index(src.colour) + 1 + i % 5) % len(colours)]}
        elif kind == "shape":
            change = {"shape": SHAPES[(SHAPES.index(src.shape) + 1 + i % 3) % len(SHAPES)]}
        elif kind == "background":
            change = {"background": bgs[(bgs.index(src.background) + 1 + i % 3) % len(bgs)]}
        elif name == "shapeworld-v1":
            change = {"texture": TEXTURES[(TEXTURES.index(src.texture) + 1) % len(TEXTURES)]}
        else:
            change = {"texture": TEXTURES[(k + 1 + k // 3) % len(TEXTURES)]}
        cases.append(Case(f"{i:02d}-{kind}", kind, src, change))
    return cases


def case_overrides(method: str, case: Case) -> dict[str, Any]:
    """The settings ``method`` takes on ``case`` beyond its registered ones, as a user would pass them for
    this edit (``api.Editor``'s ``overrides``): the background as the edit target, and the per-kind flags."""
    over: dict[str, Any] = {}
    if case.kind in ("background", "texture"):
        over["control.edit_target"] = "background"
        if METHODS[method][1].get("stdg.enabled", True):
            over["stdg.coefficients"] = BACKGROUND_COEFFICIENTS_BY_METHOD.get(method, BACKGROUND_COEFFICIENTS)
    over.update(OVERRIDES_BY_METHOD_AND_KIND.get(method, {}).get(case.kind, {}))
    return over


def case_config(base: EditConfig, method: str, case: Case) -> EditConfig:
    """The configuration ``method`` runs ``case`` with: what ``api.Editor`` builds from the same arguments."""
    return method_config(method, base, case_overrides(method, case))


def inversion_key(cfg: EditConfig, method: str | None = None) -> str:
    """The settings that stage 1 (inversion) reads: methods of a case with the same key (VideoDirector
    and its attention-control ablations) can share one inversion, since it does not see the target.
    Methods built by another factory (ASSD's stage 1 only encodes E(X)), or run on other model settings
    (``vd-motion-per-frame``), never share with them."""
    factory = METHODS[method][0] if method in METHODS else None
    stage1 = f"{factory.__module__}.{factory.__qualname__}" if factory is not None else ""
    return json.dumps({**inversion_settings(cfg), "stage1": stage1, "model": model_key(cfg)}, sort_keys=True)


def model_key(cfg: EditConfig) -> str:
    """The model settings of ``cfg`` as one string: methods whose overrides change them (``model.*``) get
    their own loaded models."""
    return json.dumps(asdict(cfg.model), sort_keys=True, default=str)


def select_cases(suite: str = DEFAULT_SUITE, max_cases: int | None = None,
                 case_ids: list[str] | None = None) -> list[Case]:
    """The suite's cases: all, the first ``max_cases``, or those named in ``case_ids`` (in suite order)."""
    cases = shapeworld_suite(suite)
    if case_ids:
        known = {c.id for c in cases}
        unknown = [i for i in dict.fromkeys(case_ids) if i not in known]
        if unknown:
            raise UserError(f"{suite} has no case {', '.join(map(repr, unknown))}; its cases are "
                            f"{cases[0].id} ... {cases[-1].id} (number-kind, e.g. 05-colour)")
        cases = [c for c in cases if c.id in set(case_ids)]
    return cases[: max_cases or None]


def inversion_groups(base: EditConfig, methods: list[str], case: Case) -> list[list[str]]:
    """``methods`` grouped by the inversion they need on ``case`` (first-seen order): a worker that
    takes a whole group inverts once."""
    groups: dict[str, list[str]] = {}
    for m in methods:
        groups.setdefault(inversion_key(case_config(base, m, case), m), []).append(m)
    return list(groups.values())


def first_frame_for(method: str, case: Case, base: EditConfig) -> torch.Tensor:
    """The edited first frame ``(3, H, W)`` that an image-guided method (I2VEdit) propagates: the target's exact
    frame 0 (the user's edit, so the bench measures propagation alone), or for ``*-text`` variants frame 0 edited
    from the target prompt by VideoDirector on one frame, on the bundled text-to-video models."""
    if method.endswith("-text"):
        from ..api import edit_first_frame

        return edit_first_frame(base, render(case.source)[0][0][0], case.source.caption(), case.target.caption())
    return render(case.target)[0][0][0]


def run_case(editor_models, base: EditConfig, method: str, case: Case,  # noqa: ANN001
             shared: dict[tuple[str, str], tuple[Any, float]] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Invert, edit and score one (case, method) pair.

    ``shared``: a memo of ``(case id, inversion_key) -> (inversion, reconstruction PSNR)`` filled and
    reused across the methods of a case; the reported ``time_s`` still includes the inversion's time."""
    editor = Editor(base, method=method, models=editor_models, overrides=case_overrides(method, case))
    cfg = editor.cfg
    frames, masks = (x[0] for x in render(case.source))
    key = (case.id, inversion_key(cfg, method))
    if shared is not None and key in shared:
        inv, recon_psnr = shared[key]
    else:
        inv = editor.invert(frames, masks, case.source.caption(), use_cache=False)
        recon_psnr = reconstruction_psnr(editor, inv, frames)
        if shared is not None:
            if any(k[0] != case.id for k in shared):  # keep one case's inversions: workers go case by case
                shared.clear()
            shared[key] = (inv, recon_psnr)
    if getattr(editor.method, "needs_prompts", True):
        res = editor.edit(inv, case.target.caption())
    else:  # I2VEdit propagates an edited first frame
        res = editor.method.edit_from_image(inv, first_frame_for(method, case, base))
    scores = score_edit(res.frames, case.source, case.target)
    scores["reconstruction_psnr"] = recon_psnr
    scores["mean_null_inner_iterations"] = inv.meta.get("mean_inner_iterations", 0.0)
    scores["time_s"] = sum(inv.meta["timings"].values()) + sum(res.timings.values())
    # the steps this method ran (I2VEdit: its own Euler steps; ASSD, which inverts nothing: the DDIM setting)
    scores["steps"] = getattr(editor.method, "inversion_steps", 0) or cfg.inversion.num_steps
    return scores, to_uint8(res.frames)


def bench_settings(base: EditConfig, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings of a bench run that change its scores, stored in every case file and compared on resume:
    steps, null-text iterations, guidance scale and ``--set``. Device and precision are left out, since a run's
    shards may come from other machines (a GPU's cases gathered on a CPU)."""
    i = base.inversion
    return {"num_steps": i.num_steps, "null_inner_steps": i.null_inner_steps, "guidance_scale": i.guidance_scale,
            "set": {k: v for k, v in sorted((overrides or {}).items())}}


def _stored_record(f: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """A finished case's file, refused in one line when it was made with other settings (files written before
    the settings were stored are taken as they are)."""
    rec = json.loads(f.read_text())
    made, want = rec.get("bench_settings"), json.loads(json.dumps(settings))  # as stored: lists, not tuples
    if made is not None and made != want:
        differ = sorted(k for k in {*want, *made} if made.get(k) != want.get(k))
        raise UserError(f"{f} was made with other bench settings ({', '.join(f'{k} {made.get(k)!r}' for k in differ)}); "
                        f"use another --results folder, or the same settings to resume it")
    return rec


def _run_and_store(models, base: EditConfig, method: str, case: Case, f: Path,  # noqa: ANN001
                   shared: dict | None, settings: dict[str, Any]) -> dict[str, Any]:
    """Run one case and write its JSON and its strip row (4 frames side by side, ``.png``) atomically."""
    scores, edited = run_case(models, base, method, case, shared)
    rec = {"case": case.id, "kind": case.kind, "source": case.source.caption(), "target": case.target.caption(),
           "null_inner_steps": base.inversion.null_inner_steps, **scores,
           "bench_settings": settings}
    f.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(list(edited[:: max(1, len(edited) // 4)]), 1)).save(buf, format="png")
    atomic_write_bytes(f.with_suffix(".png"), buf.getvalue())
    write_json(f, rec)
    return rec


@torch.no_grad()
def ceiling_scores(models, case: Case) -> dict[str, float]:  # noqa: ANN001
    """One case's target rendering through the VAE (encode, decode), scored as an edit of the source."""
    gt = render(case.target)[0][0]
    through_vae = models.decode_latents(models.encode_video(gt, sample=False)).float().cpu()
    return score_edit(through_vae, case.source, case.target)


def latent_ceiling(models, cases: list[Case]) -> dict[str, dict[str, dict[str, float]]]:  # noqa: ANN001
    """What a perfect latent-space editor would score: the ground-truth target through the VAE
    (encode, decode) scored like an edit, per kind of case, ``{kind: {metric: {"mean", "std", "n"}}}``.
    It bounds every method that edits latents and decodes them (``reconstruction_psnr`` is omitted:
    it does not apply)."""
    rows: dict[str, list[dict[str, float]]] = {}
    for case in cases:
        rows.setdefault(case.kind, []).append(ceiling_scores(models, case))
    metrics = [k for k in METRICS if k != "reconstruction_psnr"]
    return {kind: {k: {**_agg([r[k] for r in recs]), "n": len(recs)} for k in metrics} for kind, recs in rows.items()}


def known_methods(methods: list[str] | None) -> list[str]:
    """``methods`` (default: every registered one), with a one-line error for a name not registered."""
    names = methods or list(METHODS)
    if unknown := [m for m in names if m not in METHODS]:
        raise UserError(f"unknown method {unknown[0]!r}; choose from: {', '.join(METHODS)}")
    return names


def run_workers(n: int, options: list[str], suite: str = DEFAULT_SUITE, methods: list[str] | None = None,
                max_cases: int | None = None, results: Path = Path("benchmarks/results"),
                progress: Progress = no_progress, poll_s: float = 2.0, case_ids: list[str] | None = None) -> None:
    """Start ``n`` shard workers (``videodirector bench OPTIONS --shard i/n``) as subprocesses and wait
    for them, showing how many (case, method) pairs are stored. On one GPU a small model is
    launch-bound, so workers overlap (15 on an H100: about 23 pairs a minute). Each worker's output
    goes to ``results/<suite>/workers/worker-<i>-of-<n>.log``; a failed worker is a one-line error
    that names its log. Gather afterwards with a plain run (``run_bench``), which runs nothing stored."""
    import subprocess
    import sys
    import time

    root = Path(results) / suite
    names = known_methods(methods)
    cases = select_cases(suite, max_cases, case_ids)
    wanted = [root / "cases" / m / f"{c.id}.json" for c in cases for m in names]
    logs = root / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        log = logs / f"worker-{i}-of-{n}.log"
        with open(log, "w") as f:
            cmd = [sys.executable, "-m", "videodirector.cli", "bench", *options, "--shard", f"{i}/{n}"]
            procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), log))
    try:
        while any(p.poll() is None for p, _ in procs):
            progress(f"bench ({n} workers)", sum(f.is_file() for f in wanted), len(wanted))
            time.sleep(poll_s)
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
    progress(f"bench ({n} workers)", sum(f.is_file() for f in wanted), len(wanted))
    failed = [(p.returncode, log) for p, log in procs if p.returncode != 0]
    if failed:
        rc, log = failed[0]
        raise UserError(f"{len(failed)} of {n} bench workers failed (first: exit {rc}, see {log}); finished cases are "
                        "kept: fix the cause and run again to resume")


def paired_comparison(per_case: dict[str, list[dict[str, Any]]], reference: str = "videodirector",
                      metrics: tuple[str, ...] = METRICS) -> dict[str, dict[str, dict[str, float]]]:
    """Each method against ``reference`` on the same cases: per metric the mean paired difference
    ``d = method - reference``, its standard error ``sd(d) / sqrt(n)``, the number of cases where the
    method is worse, and ``worse`` (``better``) = the mean is worse (better) by more than two standard
    errors (for ``trajectory_error_px`` and ``flicker`` lower is better)."""
    ref = {r["case"]: r for r in per_case[reference]}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, recs in per_case.items():
        if method == reference:
            continue
        out[method] = {}
        for k in metrics:
            pairs = [(r.get(k), ref[r["case"]].get(k)) for r in recs if r["case"] in ref]
            d = [a - b for a, b in pairs if a is not None and b is not None and not math.isnan(a - b)]
            if not d:
                continue
            sign = -1.0 if k in LOWER_IS_BETTER else 1.0  # > 0: better than the reference
            mean = statistics.fmean(d)
            se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
            out[method][k] = {"mean_diff": mean, "se": se, "n": len(d), "worse_cases": sum(sign * x < 0 for x in d),
                              "worse": bool(sign * mean < -2 * se), "better": bool(sign * mean > 2 * se)}
    return out


def _agg(values: list[float]) -> dict[str, float]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": statistics.fmean(v), "std": statistics.pstdev(v) if len(v) > 1 else 0.0}


def interleave_kinds(cases: list[Case]) -> list[Case]:
    """Cases in round-robin order over their kinds (colour, shape, background, ...), so that workers
    cut off by a time limit still leave every kind of edit finished by every method."""
    by_kind: dict[str, list[Case]] = {}
    for c in cases:
        by_kind.setdefault(c.kind, []).append(c)
    rounds = max((len(v) for v in by_kind.values()), default=0)
    return [v[r] for r in range(rounds) for v in by_kind.values() if r < len(v)]


def run_bench(suite: str = DEFAULT_SUITE, methods: list[str] | None = None, device: str = "auto",
              max_cases: int | None = None, steps: int | None = None, inner_steps: int | None = None,
              results: Path = Path("benchmarks/results"), progress: Progress = no_progress,
              shard: tuple[int, int] | None = None, stored_only: bool = False,
              guidance_scale: float | None = None, overrides: dict[str, Any] | None = None,
              case_ids: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) ``methods`` on the suite, then write per-method JSON, ``summary.json`` and the report.

    ``shard=(i, n)`` runs only every n-th (case, method) pair, case-major with the kinds of edit
    interleaved (:func:`interleave_kinds`), starting at i, and writes no
    summary: start n such workers (on one GPU a small model is launch-bound, so they overlap), then run
    once without ``shard`` to gather the cached cases into the summary and report.

    ``stored_only`` runs nothing: the summary and report cover the cases that every method has
    finished (for a run cut short by a time limit).

    ``guidance_scale``: the CFG scale ``w`` of inversion and editing, by default the bundled models' own
    (:data:`~videodirector.api.BUNDLED_GUIDANCE_SCALE`).
    """
    cases = select_cases(suite, max_cases, case_ids)
    methods = known_methods(methods)
    over = {**bundled_model_config(device), "input.height": 64, "input.width": 64}
    if steps:
        over["inversion.num_steps"] = steps
    if inner_steps:
        over["inversion.null_inner_steps"] = inner_steps
    over["inversion.guidance_scale"] = BUNDLED_GUIDANCE_SCALE if guidance_scale is None else guidance_scale
    # Video-P2P writes CFG as eps_u + s (eps_c - eps_u): s = w + 1 is the same guidance. Every case is a word
    # swap (official is_word_swap: replace), blended on the swapped word (the official configs name it).
    over.update({"video_p2p.guidance_scale": over["inversion.guidance_scale"] + 1.0, "video_p2p.cross_mode": "replace",
                 "video_p2p.auto_blend_words": True})
    # I2VEdit: the bundled image-to-video model, one 16-frame clip per case
    over.update({"i2vedit.model": str(BUNDLED_WEIGHTS / "i2v"),
                 "i2vedit.chunk_size": 16})
    over.update(overrides or {})
    base = apply_overrides(EditConfig(), over)
    settings = bench_settings(base, overrides)
    root = Path(results) / suite
    loaded: dict = {}  # loader, or model settings (``model_key``) -> models, each loaded on first need
    shared: dict = {}  # one case's inversions, reused by the methods that invert alike (``inversion_key``)

    def models_for(cfg: EditConfig):  # noqa: ANN202
        """The AnimateDiff bundle for ``cfg``'s model settings: a variant that overrides ``model.*`` gets its own."""
        from ..models.loading import load_models

        key = model_key(cfg)
        if key not in loaded:
            loaded[key] = load_models(cfg.model)
        return loaded[key]

    def record(case: Case, method: str) -> dict[str, Any]:
        """The case's stored result, or run it now (loading the models on first need) and store it."""
        f = root / "cases" / method / f"{case.id}.json"
        if f.is_file():
            return _stored_record(f, settings)
        if method in MODEL_LOADERS:  # a method on other models (Video-P2P's T2S UNet): loaded once per loader
            loader = MODEL_LOADERS[method]
            if loader not in loaded:
                loaded[loader] = loader(base)
            return _run_and_store(loaded[loader], base, method, case, f, shared, settings)
        return _run_and_store(models_for(case_config(base, method, case)), base, method, case, f, shared, settings)

    if shard is not None:
        i, n = shard
        if not 0 <= i < n:
            raise UserError(f"shard {i}/{n} is out of range; use --shard I/N with 0 <= I < N")
        # n workers share the machine's cores: torch's default (all cores each) oversubscribes the CPU
        torch.set_num_threads(max(1, (os.cpu_count() or n) // n))
        mine = [(c, ms) for c in interleave_kinds(cases) for ms in inversion_groups(base, methods, c)][i::n]
        for k, (case, group) in enumerate(mine):
            for method in group:
                record(case, method)
            progress(f"bench shard {i}/{n}", k + 1, len(mine))
        return {}
    if stored_only:
        cases = [c for c in cases if all((root / "cases" / m / f"{c.id}.json").is_file() for m in methods)]
        if not cases:
            raise UserError(f"no case of {suite} is finished by every method in {root}; run the bench (or its "
                            "shards) first, or choose fewer --methods")
    else:  # run what is missing case by case, so the methods of a case share their inversions
        pairs = [(c, m) for c in cases for g in inversion_groups(base, methods, c) for m in g]
        for k, (case, method) in enumerate(pairs):
            record(case, method)
            progress("bench", k + 1, len(pairs))
    strips: dict[str, dict[str, np.ndarray]] = {c.id: {} for c in cases}  # strip rows, (H, 4 W, 3) uint8
    per_case_all: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        per_case = per_case_all[method] = []
        for case in cases:
            rec = record(case, method)
            row_f = root / "cases" / method / f"{case.id}.png"
            if row_f.is_file():
                strips[case.id][method] = np.asarray(Image.open(row_f).convert("RGB"))
            per_case.append(rec)
        summary = {k: _agg([r.get(k) for r in per_case]) for k in (*METRICS, "mean_null_inner_iterations", "time_s")}
        write_json(root / f"{method}.json", {"method": method, "cases": per_case, "summary": summary})
    summary_all = {}
    for method in methods:
        p = root / f"{method}.json"
        summary_all[method] = json.loads(p.read_text())["summary"]
    write_json(root / "summary.json", summary_all)
    by_kind = {m: summarise_by_kind(per_case_all[m], cases) for m in per_case_all}
    write_json(root / "by_kind.json", by_kind)
    paired = paired_comparison(per_case_all) if "videodirector" in per_case_all and len(per_case_all) > 1 else {}
    if paired:
        write_json(root / "paired.json", paired)
    ceiling_f = root / "ceiling.json"
    ceiling = json.loads(ceiling_f.read_text()) if ceiling_f.is_file() else None
    if ceiling is None or sum(v[METRICS[0]]["n"] for v in ceiling.values()) != len(cases):
        ceiling = latent_ceiling(models_for(base), cases)
        write_json(ceiling_f, ceiling)
    write_report(root, summary_all, cases, strips, base, paired, by_kind, ceiling)
    return summary_all


def summarise_by_kind(per_case: list[dict[str, Any]], cases: list[Case]) -> dict[str, dict[str, dict[str, float]]]:
    """``{kind: {metric: {"mean", "std", "n"}}}``: one method's results split by the kind of edit. The
    split matters: ``background_psnr`` (outside both masks) is what an object edit must keep, but it is
    the edited region of a background edit; ``preserved_psnr`` is what each kind must keep."""
    kind_of = {c.id: c.kind for c in cases}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for kind in dict.fromkeys(c.kind for c in cases):
        rows = [r for r in per_case if kind_of.get(r.get("case")) == kind]
        out[kind] = {k: {**_agg([r.get(k) for r in rows]), "n": len(rows)} for k in METRICS}
    return out


def _kind_rows(by_kind: dict[str, dict[str, dict[str, float]]], cols: list[str] | tuple[str, ...],
               with_std: bool) -> list[str]:
    """Markdown rows ``| kind | cases | mean [± std] ... |`` of one ``{kind: {metric: {"mean", "std", "n"}}}``."""
    rows = []
    for kind, agg in by_kind.items():
        cells = [f"{agg[k]['mean']:.3f}" + (f" ± {agg[k]['std']:.3f}" if with_std else "") for k in cols]
        rows.append(f"| {kind} | {agg[cols[0]]['n']} | " + " | ".join(cells) + " |")
    return rows


def write_report(root: Path, summary: dict[str, Any], cases: list[Case], strips: dict[str, dict[str, np.ndarray]],
                 base: EditConfig, paired: dict[str, dict[str, dict[str, float]]] | None = None,
                 by_kind: dict[str, dict[str, dict[str, dict[str, float]]]] | None = None,
                 ceiling: dict[str, dict[str, dict[str, float]]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    lines = [f"# {root.name}: ShapeWorld ground-truth benchmark", "",
             f"{len(cases)} cases, {base.inversion.num_steps} DDIM steps, at most {base.inversion.null_inner_steps} "
             f"null-text iterations per step, CFG scale w = {base.inversion.guidance_scale:g}, models: bundled ShapeWorld. "
             "Mean ± std over cases.", "",
             "| method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for m in methods:
        cells = [f"{summary[m][k]['mean']:.3f} ± {summary[m][k]['std']:.3f}" for k in METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    full = (by_kind or {}).get("videodirector")
    if full:
        lines += ["", "## The full method by kind of edit", "",
                  "`background_psnr` is measured outside both masks: what an object edit (colour, shape) must keep, "
                  "but the edited region of a background or texture edit. `preserved_psnr` is what each kind must keep "
                  "(the background for object edits, the object for background edits).", "",
                  "| kind | cases | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
        lines += _kind_rows(full, METRICS, with_std=True)
    if ceiling:
        cols = list(next(iter(ceiling.values())))  # the metrics latent_ceiling scores
        lines += ["", "## What a perfect latent editor would score", "",
                  "The ground-truth target encoded and decoded by the VAE, scored as an edit (`ceiling.json`): "
                  "a method that edits latents can only beat it where its latents decode sharper than the "
                  "VAE's own. The bundled VAE draws small diamonds (and some small squares and triangles) as round "
                  "blobs, which the shape reader (right on every exact rendering) reads as circles, so shape "
                  "`edit_accuracy` tops out below 1 here.", "",
                  "| kind | cases | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        lines += _kind_rows(ceiling, cols, with_std=False)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, k in zip(axes.flat, METRICS):
        ax.bar(range(len(methods)), [summary[m][k]["mean"] for m in methods],
               yerr=[summary[m][k]["std"] for m in methods], color="tab:blue")
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        ax.set_title(k)
    fig.tight_layout()
    fig.savefig(root / "metrics.png", dpi=80)
    plt.close(fig)
    if paired:
        kinds = sorted({c.kind for c in cases})
        lines += ["", "## Each method against the full method, case by case", "",
                  f"Paired over the same {len(cases)} cases (kinds: {', '.join(kinds)}). *Worse* means the mean "
                  "paired difference is worse than the full method's by more than two standard errors; "
                  "Δ is method − videodirector (lower is better for trajectory_error_px and flicker).", "",
                  "| method | measurably worse on (Δ ± SE, cases worse) | measurably better on | verdict |",
                  "|---|---|---|---|"]
        for m, per_metric in paired.items():
            worse = [f"{k} {v['mean_diff']:+.3f} ± {v['se']:.3f} ({v['worse_cases']}/{v['n']})"
                     for k, v in per_metric.items() if v["worse"]]
            better = [f"{k} {v['mean_diff']:+.3f} ± {v['se']:.3f}" for k, v in per_metric.items() if v["better"]]
            verdict = "worse on at least one metric" if worse else "**not measurably worse on any metric**"
            lines.append(f"| {m} | {'; '.join(worse) or '—'} | {'; '.join(better) or '—'} | {verdict} |")
    lines += ["", "![metrics](metrics.png)", "", "## Qualitative (4 frames each: source | ground truth | methods)", ""]
    (root / "strips").mkdir(exist_ok=True)
    for case in cases:
        png = root / "strips" / f"{case.id}.png"
        if not strips[case.id] and png.is_file():  # rows not kept (results copied without them): keep the strip
            lines.append(f"- {case.id}: `{case.source.caption()}` → `{case.target.caption()}` rows: source, ground "
                         f"truth, then the methods in table order ![](strips/{case.id}.png)")
            continue
        rows = []
        src = to_uint8(render(case.source)[0][0])
        gt = to_uint8(render(case.target)[0][0])
        step = max(1, len(src) // 4)
        rows.append(np.concatenate(list(src[::step]), 1))
        rows.append(np.concatenate(list(gt[::step]), 1))
        rows += [strips[case.id][m] for m in methods if m in strips[case.id]]
        Image.fromarray(np.concatenate(rows, 0)).save(root / "strips" / f"{case.id}.png")
        lines.append(f"- {case.id}: `{case.source.caption()}` → `{case.target.caption()}` "
                     f"rows: source, ground truth, {', '.join(m for m in methods if m in strips[case.id])} "
                     f"![](strips/{case.id}.png)")
    (root / "report.md").write_text("\n".join(lines) + "\n")
