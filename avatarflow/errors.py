"""Error types shared by every layer.

`AvatarflowError` and its subclasses carry a message written for the person who has to act on
it; the CLI prints that message as one line instead of a traceback.
"""

from __future__ import annotations


class AvatarflowError(Exception):
    """An error whose message is meant for an operator, not a developer."""


class ConfigurationError(AvatarflowError):
    """Settings, presets or a deployment are wrong; fixing configuration is the remedy."""


class ManifestError(AvatarflowError):
    """A manifest cannot be read at all (as opposed to individual bad rows)."""


class NotFound(AvatarflowError):
    """A batch or asset named by the user does not exist."""


class IllegalTransition(AvatarflowError):
    """An asset was asked to move to a state its current state does not lead to."""


class ClaimConflict(AvatarflowError):
    """Another worker changed or claimed the asset first (optimistic versioning lost the race)."""
