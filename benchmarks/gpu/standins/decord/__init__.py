"""STAND-IN for `decord`, for avatarflow's GPU acceptance run only (not the real package).

Live Avatar imports `from decord import VideoReader` at module level in its pipelines, but only
calls it for `--pose_video`, which the acceptance run never passes. This package makes that import
succeed; any real use raises a clear error. Production hosts install the real decord.
"""

__version__ = "0.0.0+standin"
STANDIN = True

_MSG = (
    "decord is a stand-in on this machine (avatarflow's GPU acceptance run): reading videos "
    "(Live Avatar's --pose_video) is not available here; install the real decord"
)


class VideoReader:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(_MSG)


class AudioReader(VideoReader):
    pass


class VideoLoader(VideoReader):
    pass


def cpu(*args, **kwargs):
    raise RuntimeError(_MSG)


gpu = cpu


class bridge:
    @staticmethod
    def set_bridge(*args, **kwargs):
        raise RuntimeError(_MSG)


def __getattr__(name):
    raise AttributeError(f"{name!r}: {_MSG}")
