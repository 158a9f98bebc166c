"""STAND-IN for `flash-attn` (FlashAttention 2), for avatarflow's GPU acceptance run only.

This is NOT flash-attn. flash-attn publishes no wheel for the acceptance machine's torch/CUDA, and
that machine cannot build one, so this package answers the few entry points Live Avatar calls with
`torch.nn.functional.scaled_dot_product_attention` (which, on an H200, runs PyTorch's own flash /
memory-efficient / cuDNN kernels). Production hosts install the real flash-attn; nothing in
avatarflow imports this package.

What Live Avatar calls (liveavatar/models/wan/wan_2_2/modules/attention.py, `flash_attention`):
`flash_attn.flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
max_seqlen_k, dropout_p, softmax_scale, causal, window_size, deterministic)` with packed layouts
q [total_q, heads, head_dim], k/v [total_k, heads_k, head_dim], int32 cumulative lengths, and it
unflattens the [total_q, heads, head_dim_v] result to [batch, Lq, heads, head_dim_v]. The
FlashAttention 3 module `flash_attn_interface` is deliberately NOT provided: Live Avatar prefers it
when importable and passes it arguments of a different API.

Semantics kept from flash-attn 2.x: softmax_scale defaults to head_dim ** -0.5; `causal` with
Lq != Lk is aligned to the bottom-right corner of the score matrix; `window_size=(left, right)`
limits keys to [i + Lk - Lq - left, i + Lk - Lq + right] (-1 = unbounded); heads_k may divide heads
(GQA/MQA). Not supported (raise): softcap, alibi_slopes, return_attn_probs, paged KV (block_table).

torch.compile: the common single-sequence case (cu_seqlens of length 2, i.e. batch 1, which is
every call Live Avatar makes on one GPU) uses only static reshapes - no .tolist()/.item(), no
data-dependent shapes - and assumes, as flash-attn does, that q/k/v hold exactly that one
sequence. Batches of several sequences fall back to a per-sequence loop that reads the offsets
on the host (a graph break under torch.compile, correct but slower).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__version__ = "2.7.0+standin"
STANDIN = True

# Live Avatar calls flash_attn_varlen_func only; flash_attn_func is the [B, L, H, D] entry point.
__all__ = ["flash_attn_func", "flash_attn_varlen_func"]


def _unsupported(softcap, alibi_slopes, return_attn_probs, block_table=None):
    if softcap not in (None, 0, 0.0):
        raise NotImplementedError("flash_attn stand-in: softcap is not supported")
    if alibi_slopes is not None:
        raise NotImplementedError("flash_attn stand-in: alibi_slopes is not supported")
    if return_attn_probs:
        raise NotImplementedError("flash_attn stand-in: return_attn_probs is not supported")
    if block_table is not None:
        raise NotImplementedError("flash_attn stand-in: paged KV (block_table) is not supported")


def _mask(lq: int, lk: int, causal: bool, window_size, device) -> torch.Tensor | None:
    """Boolean [lq, lk] mask (True = attend) in flash-attn's bottom-right alignment, or None."""
    left, right = (-1, -1) if window_size is None else (int(window_size[0]), int(window_size[1]))
    if causal:
        right = 0
    if left < 0 and right < 0:
        return None
    i = torch.arange(lq, device=device).unsqueeze(1) + (lk - lq)
    j = torch.arange(lk, device=device).unsqueeze(0)
    allowed = torch.ones(lq, lk, dtype=torch.bool, device=device)
    if right >= 0:
        allowed = allowed & (j <= i + right)
    if left >= 0:
        allowed = allowed & (j >= i - left)
    return allowed


def _sdpa(q, k, v, dropout_p, softmax_scale, causal, window_size):
    """q [B, Lq, H, D], k/v [B, Lk, Hk, D(v)] -> [B, Lq, H, Dv] (contiguous)."""
    lq, lk = q.shape[1], k.shape[1]
    heads, heads_k = q.shape[2], k.shape[2]
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if heads != heads_k:
        if heads % heads_k:
            raise ValueError(f"flash_attn stand-in: {heads} query heads, {heads_k} key heads")
        kh = kh.repeat_interleave(heads // heads_k, dim=1)
        vh = vh.repeat_interleave(heads // heads_k, dim=1)
    if causal and lq == lk and (window_size is None or tuple(window_size) == (-1, -1)):
        out = F.scaled_dot_product_attention(
            qh, kh, vh, dropout_p=dropout_p, is_causal=True, scale=softmax_scale
        )
    else:
        mask = _mask(lq, lk, causal, window_size, q.device)
        out = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=mask, dropout_p=dropout_p, scale=softmax_scale
        )
        if mask is not None:
            # A query row that sees no key: SDPA gives NaN, flash-attn gives 0.
            out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return out.transpose(1, 2).contiguous()


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
    **kwargs,
):
    """Stand-in for flash_attn.flash_attn_varlen_func (packed variable-length batch).

    q [total_q, H, D], k [total_k, Hk, D], v [total_k, Hk, Dv], cu_seqlens_* int32 [batch + 1].
    Returns [total_q, H, Dv]. `deterministic` is accepted and ignored (SDPA's forward is
    deterministic); max_seqlen_* are accepted for API compatibility.
    """
    _unsupported(softcap, alibi_slopes, return_attn_probs, block_table)
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError("flash_attn stand-in: varlen q/k/v must be [total, heads, head_dim]")
    if cu_seqlens_q.shape[0] == 2 and cu_seqlens_k.shape[0] == 2:
        # One sequence: it is the whole packed tensor. Static shapes only.
        return _sdpa(
            q.unsqueeze(0),
            k.unsqueeze(0),
            v.unsqueeze(0),
            dropout_p,
            softmax_scale,
            causal,
            window_size,
        ).squeeze(0)
    offsets_q = cu_seqlens_q.tolist()
    offsets_k = cu_seqlens_k.tolist()
    if len(offsets_q) != len(offsets_k):
        raise ValueError("flash_attn stand-in: cu_seqlens_q and cu_seqlens_k differ in length")
    out = q.new_zeros(q.shape[0], q.shape[1], v.shape[2])
    for b in range(len(offsets_q) - 1):
        q0, q1, k0, k1 = offsets_q[b], offsets_q[b + 1], offsets_k[b], offsets_k[b + 1]
        if q1 == q0:
            continue
        if k1 == k0:
            continue  # flash-attn returns zeros for a sequence with no keys
        out[q0:q1] = _sdpa(
            q[q0:q1].unsqueeze(0),
            k[k0:k1].unsqueeze(0),
            v[k0:k1].unsqueeze(0),
            dropout_p,
            softmax_scale,
            causal,
            window_size,
        ).squeeze(0)
    return out


def flash_attn_func(
    q,
    k,
    v,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    **kwargs,
):
    """Stand-in for flash_attn.flash_attn_func: q [B, Lq, H, D], k/v [B, Lk, Hk, D] -> [B, Lq, H, D]."""
    _unsupported(softcap, alibi_slopes, return_attn_probs)
    return _sdpa(q, k, v, dropout_p, softmax_scale, causal, window_size)
