"""FAKE: replace_linear_with_scaled_fp8 records that it was asked to quantise."""


def replace_linear_with_scaled_fp8(module, ignore_keys=(), quantize_weight=True):
    from liveavatar.models.wan.causal_s2v_pipeline import _record

    _record("fp8", ignore_keys=list(ignore_keys))
