"""The bundled demo: a public-domain portrait (scikit-image's astronaut) and speech from espeak-ng."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from avatarflow.errors import ConfigurationError
from avatarflow.storage import atomic_path

DEMO_LINES = {
    "welcome": "Hello, and welcome to avatar flow. This video was generated from a single portrait "
    "and a short piece of speech.",
    "status": "Every video is checked for lip sync before anyone sees it, and a reviewer looks at "
    "a sample of them each day.",
}


def make_demo_inputs(folder: Path) -> Path:
    """Write the demo portrait, speech and manifest into `folder`; return the manifest path."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    portrait = folder / "astronaut.png"
    if not portrait.exists():
        with atomic_path(portrait) as tmp:
            Image.fromarray(data.astronaut()).save(tmp, format="PNG")
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise ConfigurationError(
            "the demo speaks with espeak-ng, which is not installed; run `apt-get install espeak-ng` "
            "(scripts/setup.sh does it)"
        )
    assets = []
    for name, text in DEMO_LINES.items():
        speech = folder / f"{name}.wav"
        if not speech.exists():
            with atomic_path(speech) as tmp:
                subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(tmp), text],
                               check=True, capture_output=True, timeout=60)
        assets.append({"image": portrait.name, "audio": speech.name, "external_id": f"demo-{name}",
                       "template": "default",
                       "vars": {"subject": "an astronaut in a white spacesuit",
                                "setting": "in front of an American flag"}})
    manifest = folder / "demo.yaml"
    with atomic_path(manifest) as tmp:
        tmp.write_text(yaml.safe_dump({"defaults": {"preset": "preview", "tags": ["demo"]},
                                       "assets": assets}, sort_keys=False))
    return manifest
