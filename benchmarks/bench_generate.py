"""Generation speed of the bundled model on this machine; prints figures and writes JSON.

    python benchmarks/bench_generate.py [--model DIR] [--out benchmarks/results/generate.json]

Measures: cold start of one `wordpaint generate` (process start to PNG, median of 3), seconds
per image at batch 1 and 16 for the model's default step count and for 10 and 20 steps
(DPM-Solver++ 2M, guidance 3 at every step, so two network evaluations per step), the same
network driven by a stock diffusers scheduler loop (ratio), GFLOP per image (torch's FlopCounterMode) and the fraction of this machine's fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "a red circle to the left of a blue square"


def matmul_peak_gflops(sizes: tuple[int, ...] = (1024, 2048, 3072), trials: int = 3, seconds: float = 0.5) -> float:
    """Best fp32 matmul rate over a few square sizes and timed trials: one short run of one size
    read as low as a third of the peak on some days (CPU clocks ramping, a size that suits the
    BLAS blocking badly), which made the UNet's "fraction of peak" exceed 1."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(trials):
            reps, t = 0, time.perf_counter()
            while time.perf_counter() - t < seconds:
                a @ b
                reps += 1
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def cold_start(model: str | None, reps: int = 3) -> float:
    times = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(reps):
            exe = shutil.which("wordpaint")  # the console script a user runs
            cmd = ([exe] if exe else [sys.executable, "-m", "wordpaint.cli.main"]) + ["generate", PROMPT, "-o", f"{d}/x{i}.png"]
            if model:
                cmd += ["--model", model]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_turns(fns: list, reps: int) -> list[float]:
    """Median seconds of each function, run in turns (a, b, a, b, ...) after one warm-up each, so a
    machine that slows down mid-run (shared cores) biases neither side of a ratio."""
    for fn in fns:
        fn()
    ts: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, ts):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [statistics.median(t) for t in ts]


def stock_diffusers_loop(pipe, prompts: list[str], steps: int, guidance: float) -> None:
    """The same UNet and text states through diffusers' DPMSolverMultistepScheduler, the way a
    stock diffusers pipeline loops (scale_model_input, unet, guidance, scheduler.step)."""
    from diffusers import DPMSolverMultistepScheduler

    m = pipe.model
    sched = DPMSolverMultistepScheduler(num_train_timesteps=m.config.num_train_timesteps, beta_schedule=m.config.beta_schedule,
                                        timestep_spacing="trailing", algorithm_type="dpmsolver++", solver_order=2,
                                        prediction_type=m.config.prediction_type)
    sched.set_timesteps(steps)
    cond = pipe.text_encoder.encode(prompts)
    unc = pipe.text_encoder.encode([""] * len(prompts))
    L = max(cond.hidden_states.shape[1], unc.hidden_states.shape[1])
    from wordpaint.pipelines.text_to_image import _pad

    states = torch.cat([_pad(cond.hidden_states, L), _pad(unc.hidden_states, L)])
    mask = torch.cat([_pad(cond.attention_mask, L), _pad(unc.attention_mask, L)]).float()
    r = m.config.resolution
    x = torch.randn(len(prompts), m.config.in_channels, r, r, generator=torch.Generator().manual_seed(0)) * sched.init_noise_sigma
    # a layout model reads layout channels beside the image; zeros cost the same as a real layout
    lay = torch.zeros(2 * len(prompts), m.config.layout_channels, r, r)
    with torch.no_grad():
        for t in sched.timesteps:
            xin = torch.cat([sched.scale_model_input(torch.cat([x, x]), t), lay], dim=1)
            extra = {}
            if getattr(m, "layout_residuals", None) is not None:  # the layout at every resolution, as ControlNet's inputs
                down, mid = m.layout_residuals(lay)
                extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            e_c, e_u = m.unet(xin, t, encoder_hidden_states=states, encoder_attention_mask=mask, **extra).sample.chunk(2)
            x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample


def unet_gflop_per_image(pipe) -> float:
    """GFLOP of one UNet forward for one image (FlopCounterMode counts matmuls and convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = pipe.model
    r = m.config.resolution
    enc = pipe.text_encoder.encode([PROMPT])
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m.net(torch.randn(1, m.config.in_channels, r, r), torch.tensor([500.0]), enc.hidden_states, enc.attention_mask)
    return fc.get_total_flops() / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate.json"))
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    import wordpaint
    from wordpaint import TextToImagePipeline

    res: dict = {"machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
                 "torch": torch.__version__, "wordpaint": wordpaint.__version__, "prompt": PROMPT,
                 "sampler": "dpmpp_2m", "guidance_scale": 3.0}
    res["cold_start_s"] = round(cold_start(args.model), 3)
    print(f"cold start (process start to PNG): {res['cold_start_s']:.2f} s", flush=True)
    pipe = TextToImagePipeline.from_pretrained(args.model)
    res["resolution"] = pipe.resolution
    res["model_defaults"] = pipe.defaults  # what `wordpaint generate` (the cold start) used
    res["parameters_m"] = round(sum(p.numel() for p in pipe.model.parameters()) / 1e6, 2)
    gflop_fwd = unet_gflop_per_image(pipe)
    res["unet_gflop_per_forward_per_image"] = round(gflop_fwd, 4)
    res["peak_fp32_matmul_gflops"] = round(matmul_peak_gflops(), 1)
    res["runs"] = []
    default_steps = pipe.defaults["num_inference_steps"]
    for steps in sorted({default_steps, 10, 20}):
        for bs in (1, 16):
            prompts = [PROMPT] * bs
            ours, stock = (t / bs for t in time_turns(
                [lambda: pipe(prompts, num_inference_steps=steps, guidance_scale=3.0, sampler="dpmpp_2m", seed=0, batch_size=bs),
                 lambda: stock_diffusers_loop(pipe, prompts, steps, 3.0)], args.reps))
            gflop = gflop_fwd * 2 * steps  # CFG: conditional + unconditional pass per step
            run = {"steps": steps, "default_settings": steps == default_steps, "batch": bs, "s_per_image": round(ours, 4), "stock_diffusers_s_per_image": round(stock, 4),
                   "ratio_ours_over_stock": round(ours / stock, 3), "gflop_per_image": round(gflop, 3),
                   "achieved_gflops": round(gflop / ours, 2), "fraction_of_peak": round(gflop / ours / res["peak_fp32_matmul_gflops"], 4)}
            res["runs"].append(run)
            print(json.dumps(run), flush=True)
    at_default = next(r for r in res["runs"] if r["default_settings"] and r["batch"] == 16)
    res["default_settings_s_per_image_batch16"] = at_default["s_per_image"]
    print(f"default settings ({default_steps} steps), batch 16: {at_default['s_per_image']:.3f} s/image", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
