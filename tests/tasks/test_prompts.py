"""Prompt templates: declared variables, strict rendering, the sandbox, length limits, overrides."""

from __future__ import annotations

import pytest

from tasks.prompts import PromptError, TemplateLibrary, check_prompt


def test_default_template_writes_a_descriptive_scene_prompt():
    library = TemplateLibrary()
    prompt = library.render("default", {"subject": "an elderly man with a white beard"})
    assert prompt.startswith("An elderly man with a white beard is speaking")
    assert "lips move in sync" in prompt and len(prompt) < library.get("default").max_length
    assert library.get("default").required == []
    assert library.get("presenter").required == ["topic"]


def test_unknown_and_missing_variables_are_errors_not_blanks():
    library = TemplateLibrary()
    with pytest.raises(PromptError, match="has no variable colour"):
        library.render("default", {"colour": "red"})
    with pytest.raises(PromptError, match="needs a value for topic"):
        library.render("presenter", {})
    with pytest.raises(PromptError, match="unknown prompt template 'nope'"):
        library.render("nope")


def test_templates_run_in_a_sandbox_and_strictly(tmp_path):
    (tmp_path / "evil.j2").write_text(
        "{#-\nvariables:\n  x:\n    default: a\n-#}\n{{ x.__class__.__mro__[1].__subclasses__() }} talking")
    (tmp_path / "typo.j2").write_text("{#-\nvariables:\n  subject:\n    default: a man\n-#}\n{{ subjcet }} is talking here")
    library = TemplateLibrary(tmp_path)
    with pytest.raises(PromptError, match="failed to render"):
        library.render("evil")
    with pytest.raises(PromptError, match="subjcet"):
        library.render("typo")


def test_user_templates_override_builtins_and_length_limits_hold(tmp_path):
    (tmp_path / "default.j2").write_text(
        "{#-\nmax_length: 60\nvariables:\n  subject:\n    default: a woman\n-#}\n{{ subject }} is talking with a smile, {{ subject }} again")
    library = TemplateLibrary(tmp_path)
    assert library.render("default") == "a woman is talking with a smile, a woman again"
    with pytest.raises(PromptError, match="limit is 60"):
        library.render("default", {"subject": "a very very long description of somebody"})
    with pytest.raises(PromptError, match="too short"):
        check_prompt("hi")
    assert check_prompt("  A   man\n talks.  ") == "A man talks."
