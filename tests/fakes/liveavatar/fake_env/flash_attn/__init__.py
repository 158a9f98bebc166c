"""FAKE flash_attn stub of the fake Live Avatar environment (tests only; it computes nothing).

`tests/fakes/liveavatar/python` puts this folder on PYTHONPATH so that an engine probing Live
Avatar's interpreter (``importlib.util.find_spec("flash_attn")``) finds FlashAttention 2, as in a
working real installation. With FAKE_LIVEAVATAR_MODE=flash_attn_missing it is left out, and the
fake entry point fails like the real one without FlashAttention.
"""

__version__ = "0.0.0+fake"


def flash_attn_varlen_func(*args, **kwargs):
    raise NotImplementedError("FAKE flash_attn: no kernels here")
