"""FAKE: the configuration tables s2v_streaming_interact.py and the warm worker read."""

from types import SimpleNamespace

# The s2v entry of WAN_CONFIGS (wan_s2v_14B_modified.py): only what the worker reads.
s2v_14B = SimpleNamespace(sample_fps=25, sample_shift=3, sample_steps=40, sample_guide_scale=4.5,
                          sample_solver="unipc", num_frames_per_block=3)
WAN_CONFIGS = {"t2v-A14B": None, "i2v-A14B": None, "ti2v-5B": None, "s2v-14B": s2v_14B}
SIZE_CONFIGS = {"720*400": (720, 400), "704*384": (704, 384), "688*368": (688, 368), "384*256": (384, 256),
                "1280*720": (1280, 720)}
MAX_AREA_CONFIGS = {key: w * h for key, (w, h) in SIZE_CONFIGS.items()}
