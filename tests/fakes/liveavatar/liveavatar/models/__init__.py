"""FAKE Live Avatar package (tests only): just enough of LiveAvatar@9c2c38d's module layout for
avatarflow's warm worker (`inference/warm_worker.py`, LiveAvatarBackend) to load and drive it on
a CPU-only machine: `models.wan.causal_s2v_pipeline.WanS2V`, the configs, save/merge and the
training-config parser. Like the real package, `liveavatar/` itself has no __init__.py (a
namespace package) — which is how avatarflow's own inference/liveavatar.py once shadowed it.

Importing it makes the CUDA calls the worker makes (set_device, synchronize, peak-memory
statistics, empty_cache) no-ops: the fake stands in for a GPU machine and computes nothing.
"""

import torch

for _name in ("set_device", "synchronize", "reset_peak_memory_stats", "empty_cache"):
    setattr(torch.cuda, _name, lambda *args, **kwargs: None)
torch.cuda.max_memory_allocated = lambda *args, **kwargs: 0
torch.cuda.max_memory_reserved = lambda *args, **kwargs: 0
