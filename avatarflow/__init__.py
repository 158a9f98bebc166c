"""avatarflow's shared kernel: settings, storage layout and error types used by every layer."""

__version__ = "0.1.0"
