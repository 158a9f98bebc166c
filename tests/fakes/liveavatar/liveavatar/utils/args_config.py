"""FAKE: parse_args_for_training_config reads the four LoRA settings of the training config."""

from __future__ import annotations


def parse_args_for_training_config(training_config_path: str) -> dict:
    settings: dict = {}
    with open(training_config_path) as handle:
        for line in handle:
            key, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                value = value.split("#")[0].strip().strip('"')
                try:
                    settings[key.strip()] = float(value) if "." in value else int(value)
                except ValueError:
                    settings[key.strip()] = value
    return settings
