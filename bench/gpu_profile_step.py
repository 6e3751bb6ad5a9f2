"""Counts what one optimizer step over 10,000 CUDA tensors costs the device, as the torch profiler
(CUPTI) sees it, not as fusedtrain's own counters say: kernels, copies and CUDA API calls per step,
with new grad tensors every step (zero_grad(set_to_none=True)); and whether a step ever waits for
the device.  torch.optim.AdamW(fused=True) on the same tensors is profiled beside it."""

from __future__ import annotations

import argparse
import collections
import sys

import numpy as np

import common

STEPS = 3
# CUDA API calls that wait for the device (or may: cudaMalloc/cudaFree/pinned allocations).
# Stream-ordered pool calls (cudaMallocFromPoolAsync, cudaFreeAsync) do not.
SYNC_CALLS = {"cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize",
              "cudaMalloc", "cudaFree", "cudaMallocHost", "cudaFreeHost", "cudaHostAlloc",
              "cudaMemcpy", "cuCtxSynchronize", "cuStreamSynchronize", "cuEventSynchronize",
              "cuMemAlloc_v2", "cuMemFree_v2"}


def profile_steps(torch, step_fns, baseline=None):
    """Per-step averages of device kernels, device copies and CUDA API calls of step_fns; API
    calls the harness itself makes (baseline: the same profile of no steps) are subtracted."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for fn in step_fns:
            fn()
        torch.cuda.synchronize()
    kernels, copies, api = collections.Counter(), collections.Counter(), collections.Counter()
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            (copies if e.name.startswith(("Memcpy", "Memset")) else kernels)[e.name] += 1
        elif e.name.startswith(("cuda", "cu")) and not e.name.startswith("cudnn"):
            api[e.name] += 1
    if baseline is not None:
        api = collections.Counter({k: v - baseline["api_calls"].get(k, 0) for k, v in api.items()})
        api = +api      # drops what the harness alone accounts for
    n = max(len(step_fns), 1)
    return {"kernels_per_step": sum(kernels.values()) / n,
            "copies_per_step": sum(copies.values()) / n,
            "kernel_names": dict(kernels), "copies": dict(copies), "api_calls": dict(api),
            "sync_or_alloc_calls": {k: v for k, v in api.items() if k in SYNC_CALLS}}


def waits_for_device(torch, fn):
    """True if fn returned only after the stream drained (it synchronized somewhere)."""
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2.0 * 2e9))        # about a second of spin at up to 2 GHz
    fn()
    return torch.cuda.current_stream().query()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tensors", type=int, default=10_000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch
    import fusedtrain as ft
    if not torch.cuda.is_available() or not ft.info()["cuda_devices"]:
        print("no CUDA device: nothing to profile", file=sys.stderr)
        return 0
    rng = np.random.default_rng(0)
    sizes = [int(x) for x in rng.integers(1, 13_001, size=args.tensors)]
    params = [torch.randn(n, device="cuda") for n in sizes]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    # Fresh grads for every step, made before the profiled region.
    grads = [[torch.randn_like(p) for p in params] for _ in range(STEPS + 2)]
    ft.adamw_(params, grads[0], m, v, step=1, lr=1e-3)      # the first step uploads the chunk list
    builds = ft._C.cuda_chunk_list_builds()
    harness = profile_steps(torch, [])
    ours = profile_steps(torch, [lambda k=k: ft.adamw_(params, grads[k], m, v, step=k + 1, lr=1e-3)
                                 for k in range(1, STEPS + 1)], harness)
    ours["chunk_list_builds_during_steps"] = ft._C.cuda_chunk_list_builds() - builds
    ours["waits_for_device"] = waits_for_device(
        torch, lambda: ft.adamw_(params, grads[-1], m, v, step=STEPS + 2, lr=1e-3))

    tparams = [p.clone().requires_grad_(True) for p in params]
    opt = torch.optim.AdamW(tparams, lr=1e-3, fused=True)

    def torch_step(k):
        for p, g in zip(tparams, grads[k]):
            p.grad = g
        opt.step()
    torch_step(0)
    theirs = profile_steps(torch, [lambda k=k: torch_step(k) for k in range(1, STEPS + 1)], harness)
    theirs["waits_for_device"] = waits_for_device(torch, lambda: torch_step(STEPS + 1))

    doc = {"bench": "profile_step_cuda", "tensors": len(sizes), "params": sum(sizes),
           "device": {"kind": "cuda", "name": torch.cuda.get_device_name()},
           "versions": {**common.versions(ft.info(), torch), "cuda": torch.version.cuda},
           "git_sha": common.git_sha(), "date": common.utc_now_iso(),
           "fusedtrain_adamw": ours, "torch_adamw_fused": theirs}
    out = args.json or common.RESULTS_DIR / f"cuda_profile_{common.slug(torch.cuda.get_device_name())}.json"
    common.write_json(out, doc)
    for name, r in (("fusedtrain adamw_", ours), ("torch AdamW(fused)", theirs)):
        print(f"{name:>20}: {r['kernels_per_step']:.1f} kernels/step, {r['copies_per_step']:.1f} "
              f"copies/step, sync/alloc API calls {r['sync_or_alloc_calls'] or 'none'}, "
              f"waits for device: {r['waits_for_device']}")
    print(f"fusedtrain chunk-list builds during the profiled steps: "
          f"{ours['chunk_list_builds_during_steps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
