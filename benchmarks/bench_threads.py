"""Benchmark of the CPU thread choice: a training step, idle and beside a competing job.

A training step (forward + backward + SGD step of a small LevelSet R-CNN, the tests' tiny
widths, on 2 synthetic 256 x 256 images from the package's synthetic-shapes renderer) is
timed with no other job of ours running ("idle") and while a second, single-threaded PyTorch
job (matmuls in a loop, ``OMP_NUM_THREADS=1``) runs on the same CPUs ("contended"), for

* ``defaults``: torch as it starts (intra-op threads = the host's cores, OpenMP's default
  spin-then-sleep wait at barriers);
* ``ours``: :func:`levelset_rcnn.threads.configure_threads` called before torch is imported,
  as the CLI does (threads from the affinity mask and cgroup quota, ``OMP_WAIT_POLICY=PASSIVE``,
  ``KMP_BLOCKTIME=0``, all through the environment);

and, with ``--ablation``, ``ours-spin`` (our thread count, OpenMP's default wait policy) and
``one-thread`` (one intra-op thread, passive), to see which part helps.

Each mode runs in a fresh process (OpenMP reads its settings when torch is imported). The
competing job is started once per mode and paused (SIGSTOP) for the idle steps and resumed
(SIGCONT) for the contended ones, alternating step by step, so that a change in the machine's
load (other users) affects both alike; each figure is the median. The key figure is the
slowdown, contended over idle, per mode.

    python benchmarks/bench_threads.py --json bench_results/threads.json
    python benchmarks/bench_threads.py --ablation --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = ("defaults", "ours")
ABLATION_MODES = ("ours-spin", "one-thread")
#: Variables that change torch's threading; cleared for every mode so that each starts clean.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
               "GOMP_SPINCOUNT", "OMP_PROC_BIND", "OMP_PLACES", "LEVELSET_RCNN_THREADS")
#: The tests' tiny LevelSet R-CNN (tests/modeling/common.py: TINY) at 256 x 256.
MODEL_KWARGS = dict(
    backbone="resnet18", weights_backbone=None, fpn_channels=32, box_representation_size=64,
    mask_layers=(32, 32), predictor_channels=32, cv_channels=16, cv_hidden_channels=16,
    min_size=256, max_size=256, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=150,
    rpn_post_nms_top_n_test=50, progress=False,
)

COMPETITOR = """
import torch
torch.set_num_threads(1)
a = torch.randn(384, 384)
b = torch.randn(384, 384)
print("ready", flush=True)
while True:
    a = torch.tanh(a @ b)
"""


def clean_env(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if mode == "one-thread":
        env["LEVELSET_RCNN_THREADS"] = "1"
    return env


# ------------------------------------------------------------------------------- worker
def _configure(mode: str) -> dict:
    """Before torch is imported: what the mode does to the thread settings (for ours, what
    the CLI does first thing)."""
    if mode == "defaults":
        return {}
    from levelset_rcnn.threads import configure_threads

    choice = configure_threads(wait_policy=(mode != "ours-spin"))
    return {"choice": choice.describe(), "env_set": choice.env_defaults,
            "applied_before_torch": choice.applied_before_torch}


def _batch(n: int, size: int, seed: int):
    import numpy as np
    import torch

    from levelset_rcnn.data.synthetic import render_image

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        img, instances = render_image((size, size), rng)
        masks = torch.from_numpy(np.stack([m for _, m in instances])).to(torch.uint8)
        boxes = []
        for m in masks.bool():
            ys, xs = torch.where(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        images.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor([c for c, _ in instances], dtype=torch.int64),
                        "masks": masks})
    return images, targets


def worker(args) -> dict:
    info = _configure(args.worker)
    import torch

    from levelset_rcnn.data.synthetic_shapes import SHAPE_NAMES
    from levelset_rcnn.modeling import levelset_rcnn

    torch.manual_seed(0)
    model = levelset_rcnn(num_classes=1 + len(SHAPE_NAMES), **MODEL_KWARGS).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    images, targets = _batch(args.images, args.size, seed=0)

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        losses = model(images, targets)
        sum(losses.values()).backward()
        opt.step()
        return time.perf_counter() - start

    env = clean_env("defaults")
    env["OMP_NUM_THREADS"] = "1"
    comp = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert comp.stdout is not None and comp.stdout.readline().strip() == "ready"
        comp.send_signal(signal.SIGSTOP)
        for _ in range(args.warmup):
            step()
        idle, contended = [], []
        for _ in range(args.steps):
            comp.send_signal(signal.SIGSTOP)
            time.sleep(0.05)
            idle.append(step())
            comp.send_signal(signal.SIGCONT)
            time.sleep(0.2)  # let it take its core
            contended.append(step())
    finally:
        comp.send_signal(signal.SIGCONT)
        comp.kill()
        comp.wait()
    res = {"mode": args.worker, "torch_threads": torch.get_num_threads(),
           "torch_interop_threads": torch.get_num_interop_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "idle_s": statistics.median(idle), "contended_s": statistics.median(contended),
           "idle_all_s": idle, "contended_all_s": contended, **info}
    res["slowdown"] = res["contended_s"] / res["idle_s"]
    return res


# ------------------------------------------------------------------------------- driver
def run_mode(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--images", str(args.images), "--size",
           str(args.size)]
    out = subprocess.run(cmd, env=clean_env(mode), check=True, capture_output=True,
                         text=True, timeout=args.timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="idle / contended step pairs")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ablation", action="store_true",
                    help="also our thread count with the default wait policy, and one thread")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per mode, seconds")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--worker", choices=MODES + ABLATION_MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    from levelset_rcnn.threads import choose_threads

    choice = choose_threads(clean_env("defaults"))
    modes = MODES + (ABLATION_MODES if args.ablation else ())
    results = {m: run_mode(m, args) for m in modes}
    res = {"machine": platform.machine(), "cpu_count": os.cpu_count(),
           "host_choice": choice.describe(), "loadavg_at_end": os.getloadavg(),
           "images": args.images, "size": args.size, "steps": args.steps, "modes": results,
           "defaults_slowdown": results["defaults"]["slowdown"],
           "ours_slowdown": results["ours"]["slowdown"],
           "ours_vs_defaults_contended": (results["defaults"]["contended_s"]
                                          / results["ours"]["contended_s"])}
    print(f"\nTraining step: LevelSet R-CNN (tiny widths), {args.images} images "
          f"{args.size}x{args.size}, forward + backward + SGD; os.cpu_count() = "
          f"{os.cpu_count()}, {choice.describe()}")
    print(f"contended = beside one single-threaded PyTorch job; median of {args.steps} "
          "alternating steps each; load average at the end "
          + " ".join(f"{x:.2f}" for x in res["loadavg_at_end"]) + " (other users included)")
    print(f"{'':12}{'threads':>8}{'interop':>8}  {'wait policy':12}{'idle':>9}"
          f"{'contended':>11}{'slowdown':>10}  target")
    for m, r in results.items():
        target = "<= 2.5x" if m == "ours" else ""
        print(f"{m:12}{r['torch_threads']:>8}{r['torch_interop_threads']:>8}  "
              f"{r['omp_wait_policy'] or '(default)':12}{r['idle_s']:>8.2f}s"
              f"{r['contended_s']:>10.2f}s{r['slowdown']:>9.2f}x  {target}")
    print(f"ours vs defaults beside the other job: {res['ours_vs_defaults_contended']:.2f}x "
          "faster")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
