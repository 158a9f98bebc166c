"""Does torch.compile get through Live Avatar's `flash_attention` on this Python and torch? (a probe)

Live Avatar compiles its DiT forward (ENABLE_COMPILE, on by default). Its cross-attention calls
`liveavatar/models/wan/wan_2_2/modules/attention.py` `flash_attention` with per-sample key lengths,
whose `[u[:v] for u, v in zip(v, k_lens)]` breaks the graph; on Python >= 3.12 (inlined
comprehensions, PEP 709) the resume function dynamo makes after that break was seen to read `v`
unbound (UnboundLocalError) with torch 2.11. This probe compiles that function alone on small
CUDA tensors — seconds, not the minutes of a full model — and prints one JSON line: whether it
compiled and ran, the exception if not, and the dynamo settings in force. Run it once as is and
once with TORCHDYNAMO_CAPTURE_SCALAR_OUTPUTS=1 to see whether capturing scalars avoids the break.

    python3 benchmarks/gpu/compile_probe.py --liveavatar CHECKOUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--liveavatar", required=True)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.liveavatar))
    import torch
    from liveavatar.models.wan.wan_2_2.modules.attention import flash_attention

    report: dict[str, object] = {
        "python": sys.version.split()[0], "torch": torch.__version__,
        "capture_scalar_outputs": bool(torch._dynamo.config.capture_scalar_outputs),
    }
    q = torch.randn(1, 256, 40, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 77, 40, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 77, 40, 128, device="cuda", dtype=torch.bfloat16)
    k_lens = torch.tensor([77], dtype=torch.int32, device="cuda")

    def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor) -> torch.Tensor:
        return flash_attention(q=q, k=k, v=v, k_lens=k_lens) * 1.0

    for label, fn in (("wrapper", cross_attention), ("flash_attention", flash_attention)):
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend="inductor")
        started = time.monotonic()
        try:
            if label == "wrapper":
                out = compiled(q, k, v, k_lens)
            else:
                out = compiled(q=q, k=k, v=v, k_lens=k_lens)
            torch.cuda.synchronize()
            reference = flash_attention(q=q, k=k, v=v, k_lens=k_lens)
            report[label] = {"ok": True, "seconds": round(time.monotonic() - started, 2),
                             "max_abs_diff": float((out.float() - reference.float()).abs().max())}
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            report[label] = {"ok": False, "seconds": round(time.monotonic() - started, 2),
                             "error": f"{type(exc).__name__}: {exc}"[:400],
                             "trace": traceback.format_exc()[-1500:]}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
