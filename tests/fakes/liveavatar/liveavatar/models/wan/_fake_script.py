"""FAKE: the fake s2v_streaming_interact.py's rules (clip count, output size, encoding), shared
so the fake pipeline and the fake entry point make the same video."""

import importlib.util
import os

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "minimal_inference", "s2v_streaming_interact.py")
_spec = importlib.util.spec_from_file_location("fake_s2v_streaming_interact", os.path.abspath(_PATH))
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)
