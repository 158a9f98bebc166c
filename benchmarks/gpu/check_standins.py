"""Self-check of the acceptance-run stand-ins in benchmarks/gpu/standins/ (a test aid).

Checks that the `flash_attn` stand-in matches a plain softmax(QK^T)V reference (varlen batch 1 and
several, GQA, causal with Lq != Lk aligned bottom-right as flash-attn 2 does, sliding windows, the
[B, L, H, D] entry points), that its batch-1 path compiles with torch.compile(fullgraph=True),
that `flash_attn_interface` (FlashAttention 3) is NOT importable, and that the decord/dashscope
stand-ins import and raise a clear error when used. Live Avatar's own `flash_attention` wrapper is
exercised too when --liveavatar points at a checkout and a CUDA device is present (it asserts
q.device.type == 'cuda').

    python3 benchmarks/gpu/check_standins.py [--device cuda] [--liveavatar PATH] [--no-compile]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def reference(q, k, v, causal=False, window=(-1, -1), scale=None):
    """q [Lq, H, D], k/v [Lk, Hk, D] -> [Lq, H, Dv], flash-attn 2 semantics, float64 math."""
    import torch

    lq, lk, h, hk = q.shape[0], k.shape[0], q.shape[1], k.shape[1]
    q, k, v = q.double(), k.double(), v.double()
    if h != hk:
        k = k.repeat_interleave(h // hk, dim=1)
        v = v.repeat_interleave(h // hk, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    i = torch.arange(lq)[:, None] + (lk - lq)
    j = torch.arange(lk)[None, :]
    ok = torch.ones(lq, lk, dtype=torch.bool)
    left, right = window
    if causal:
        right = 0
    if right >= 0:
        ok &= j <= i + right
    if left >= 0:
        ok &= j >= i - left
    s = s.masked_fill(~ok, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", p, v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--liveavatar", default=None, help="Live Avatar checkout (optional)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    args = ap.parse_args()

    standins = os.path.join(HERE, "standins")
    if standins not in sys.path:
        sys.path.insert(0, standins)
    import torch

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    import flash_attn

    assert getattr(flash_attn, "STANDIN", False), f"{flash_attn.__file__} is not the stand-in"
    print(f"flash_attn stand-in: {flash_attn.__file__} on {dev} ({dtype})")
    assert importlib.util.find_spec("flash_attn_interface") is None, (
        "flash_attn_interface (FA3) is importable: Live Avatar would call it instead"
    )
    fails = 0

    def check(name, got, want):
        nonlocal fails
        err = (got.double().cpu() - want.double().cpu()).abs().max().item()
        ok = err <= tol and torch.isfinite(got).all().item()
        fails += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.2e}")

    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dev, dtype)

    def cu(lens):
        return (
            torch.tensor([0] + list(lens), dtype=torch.int32).cumsum(0, dtype=torch.int32).to(dev)
        )

    # batch 1 (the path Live Avatar takes), cross-attention shapes, GQA, causal, windows
    for lq, lk, h, hk, d, causal, window in [
        (300, 300, 8, 8, 64, False, (-1, -1)),
        (120, 557, 8, 8, 128, False, (-1, -1)),
        (120, 557, 8, 2, 128, False, (-1, -1)),
        (64, 64, 4, 4, 64, True, (-1, -1)),
        (48, 200, 4, 4, 64, True, (-1, -1)),
        (200, 48, 4, 4, 64, True, (-1, -1)),
        (100, 180, 4, 4, 64, False, (16, 8)),
        (100, 100, 4, 4, 64, True, (10, -1)),
    ]:
        q, k, v = rnd(lq, h, d), rnd(lk, hk, d), rnd(lk, hk, d)
        got = flash_attn.flash_attn_varlen_func(
            q, k, v, cu([lq]), cu([lk]), lq, lk, causal=causal, window_size=window
        )
        check(
            f"varlen b=1 Lq={lq} Lk={lk} H={h}/{hk} causal={causal} window={window}",
            got,
            reference(q.cpu(), k.cpu(), v.cpu(), causal, window),
        )
    # several sequences (per-sequence fallback)
    lqs, lks = [37, 64, 5], [80, 11, 64]
    q, k, v = rnd(sum(lqs), 4, 64), rnd(sum(lks), 4, 64), rnd(sum(lks), 4, 64)
    got = flash_attn.flash_attn_varlen_func(
        q, k, v, cu(lqs), cu(lks), max(lqs), max(lks), softmax_scale=0.1
    )
    want = torch.cat(
        [
            reference(q[a:b].cpu(), k[c:e].cpu(), v[c:e].cpu(), scale=0.1)
            for a, b, c, e in zip(
                cu(lqs).tolist(), cu(lqs).tolist()[1:], cu(lks).tolist(), cu(lks).tolist()[1:]
            )
        ]
    )
    check("varlen b=3 unequal lengths, softmax_scale=0.1", got, want)
    # [B, L, H, D] entry points
    qb, kb, vb = rnd(2, 33, 4, 64), rnd(2, 47, 4, 64), rnd(2, 47, 4, 64)
    got = flash_attn.flash_attn_func(qb, kb, vb)
    want = torch.stack([reference(qb[i].cpu(), kb[i].cpu(), vb[i].cpu()) for i in range(2)])
    check("flash_attn_func B=2", got, want)

    if not args.no_compile:
        import torch._dynamo

        torch._dynamo.reset()
        fn = torch.compile(flash_attn.flash_attn_varlen_func, fullgraph=True, dynamic=False)
        q, k, v = rnd(256, 8, 64), rnd(300, 8, 64), rnd(300, 8, 64)
        t0 = time.time()
        try:
            got = fn(q, k, v, cu([256]), cu([300]), 256, 300)
            check(
                f"torch.compile(fullgraph=True) batch-1 path ({time.time() - t0:.1f}s)",
                got,
                reference(q.cpu(), k.cpu(), v.cpu()),
            )
        except Exception as exc:  # noqa: BLE001 - report, do not hide
            fails += 1
            print(f"  FAIL torch.compile(fullgraph=True) batch-1 path: {type(exc).__name__}: {exc}")

    if args.liveavatar and dev.type == "cuda":
        sys.path.insert(0, os.path.abspath(args.liveavatar))
        att = importlib.import_module("liveavatar.models.wan.wan_2_2.modules.attention")
        assert att.FLASH_ATTN_2_AVAILABLE and not att.FLASH_ATTN_3_AVAILABLE
        q, k, v = rnd(1, 90, 8, 128), rnd(1, 70, 8, 128), rnd(1, 70, 8, 128)
        got = att.flash_attention(q, k, v, k_lens=torch.tensor([70]).to(dev))
        check(
            "Live Avatar flash_attention(k_lens=...) through the stand-in",
            got[0],
            reference(q[0].cpu(), k[0].cpu(), v[0].cpu()),
        )

    for mod, call in (
        ("decord", lambda m: m.VideoReader("x.mp4")),
        ("dashscope", lambda m: m.Generation.call(model="x")),
    ):
        m = importlib.import_module(mod)
        assert getattr(m, "STANDIN", False), f"{m.__file__} is not the stand-in"
        try:
            call(m)
            fails += 1
            print(f"  FAIL {mod} stand-in did not raise")
        except RuntimeError as exc:
            print(f"  ok   {mod} stand-in raises: {str(exc)[:70]}...")
    print("standins:", "OK" if not fails else f"{fails} FAILED")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
