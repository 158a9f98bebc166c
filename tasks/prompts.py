"""Prompt templates: sandboxed Jinja2, declared variables with defaults, strict rendering.

A template is a `.j2` file whose first block is a Jinja comment holding YAML: a description,
a `max_length` and the variables it takes (each with an optional default). Rendering fails on
an unknown or missing variable instead of quietly writing an empty string into the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from avatarflow.errors import AvatarflowError
from avatarflow.text import clean_text

BUILTIN_TEMPLATES = Path(__file__).with_name("templates")
DEFAULT_TEMPLATE = "default"
MIN_PROMPT_CHARS = 10
_HEADER = re.compile(r"\A\{#-?(?P<yaml>.*?)-?#\}\s*", re.DOTALL)
_REQUIRED = object()


class PromptError(AvatarflowError):
    """A prompt or template cannot be turned into a usable prompt."""


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    path: Path
    body: str
    description: str = ""
    max_length: int = 1000
    variables: dict[str, Any] = field(default_factory=dict)  # name -> default or _REQUIRED
    help: dict[str, str] = field(default_factory=dict)

    @property
    def required(self) -> list[str]:
        return [k for k, v in self.variables.items() if v is _REQUIRED]


def _parse(path: Path) -> PromptTemplate:
    text = path.read_text(encoding="utf-8")
    match = _HEADER.match(text)
    if not match:
        raise PromptError(f"template {path} has no header comment declaring its variables")
    header = yaml.safe_load(match.group("yaml")) or {}
    variables: dict[str, Any] = {}
    help_text: dict[str, str] = {}
    for name, spec in (header.get("variables") or {}).items():
        spec = spec or {}
        variables[name] = spec.get("default", _REQUIRED)
        help_text[name] = spec.get("description", "")
    return PromptTemplate(
        name=path.stem,
        path=path,
        body=text[match.end():].strip(),
        description=header.get("description", ""),
        max_length=int(header.get("max_length", 1000)),
        variables=variables,
        help=help_text,
    )


class TemplateLibrary:
    """Templates from the built-in folder, overridden by an optional user folder."""

    def __init__(self, extra_dir: Path | None = None) -> None:
        self.dirs = [d for d in (extra_dir, BUILTIN_TEMPLATES) if d is not None]
        self.env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        # Parsed and compiled templates by path, refreshed when the file changes on disk.
        self._cache: dict[Path, tuple[int, PromptTemplate, Template]] = {}

    def names(self) -> list[str]:
        found = {p.stem for d in self.dirs if d.is_dir() for p in d.glob("*.j2")}
        return sorted(found)

    def get(self, name: str) -> PromptTemplate:
        return self._load(name)[0]

    def _load(self, name: str) -> tuple[PromptTemplate, Template]:
        for folder in self.dirs:
            path = folder / f"{name}.j2"
            if path.is_file():
                mtime = path.stat().st_mtime_ns
                cached = self._cache.get(path)
                if cached is None or cached[0] != mtime:
                    parsed = _parse(path)
                    try:
                        compiled = self.env.from_string(parsed.body)
                    except TemplateError as exc:
                        raise PromptError(f"template {name!r} does not compile: {exc}") from exc
                    cached = self._cache[path] = (mtime, parsed, compiled)
                return cached[1], cached[2]
        raise PromptError(f"unknown prompt template {name!r}; known: {', '.join(self.names())}")

    def render(self, name: str, variables: dict[str, Any] | None = None) -> str:
        template, compiled = self._load(name)
        given = dict(variables or {})
        unknown = sorted(set(given) - set(template.variables))
        if unknown:
            raise PromptError(
                f"template {name!r} has no variable {', '.join(unknown)}; it takes "
                f"{', '.join(template.variables) or 'none'}"
            )
        missing = [k for k in template.required if k not in given]
        if missing:
            raise PromptError(f"template {name!r} needs a value for {', '.join(missing)}")
        values = {k: v for k, v in template.variables.items() if v is not _REQUIRED} | given
        try:
            text = compiled.render(**values)
        except TemplateError as exc:
            raise PromptError(f"template {name!r} failed to render: {exc}") from exc
        return check_prompt(" ".join(text.split()), max_length=template.max_length)


def check_prompt(text: str, *, max_length: int = 1000) -> str:
    """Normalise whitespace, drop bidi and control characters, enforce the length limits."""
    prompt = " ".join(clean_text(text or "").split())
    if not prompt:
        raise PromptError("the prompt is empty; give a prompt or a template")
    if len(prompt) < MIN_PROMPT_CHARS:
        raise PromptError(
            f"the prompt {prompt!r} is too short ({len(prompt)} characters, minimum "
            f"{MIN_PROMPT_CHARS}); describe the person and the scene"
        )
    if len(prompt) > max_length:
        raise PromptError(f"the prompt is {len(prompt)} characters long; the limit is {max_length}")
    return prompt
