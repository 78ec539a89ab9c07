"""The renderer: contract behaviour, and the shortcuts taken for speed giving Jinja's answers."""

from __future__ import annotations

from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import pytest

from daemon.delivery.render import Renderer, _one_line, _tidy_text
from outbox import errors, resources


def _write(root: Path, files: dict[str, str]) -> Renderer:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Renderer(root, brand={"name": "Acme", "url": "https://acme.example"})


def test_the_bundled_welcome_renders_every_part() -> None:
    brand = {"name": "Acme", "url": "u", "address": ""}
    renderer = Renderer(resources.bundled_templates_dir(), brand=brand)
    rendered = renderer.render(
        channel="email",
        template="welcome",
        context={"name": "Ann <b>", "login_url": "https://x.example/?a=1&b=2"},
    )
    assert rendered.subject == "Welcome to Acme, Ann <b>!"
    assert "Hi Ann <b>," in (rendered.text or "")
    assert "Ann &lt;b&gt;" in (rendered.html or "")  # autoescaped in HTML only
    assert "https://x.example/?a=1&amp;b=2" in (rendered.html or "")


def test_dict_keys_and_dict_methods_resolve_as_in_jinja(tmp_path: Path) -> None:
    renderer = _write(
        tmp_path,
        {
            "t/subject.j2": "{{ brand.name }} {{ data.items() | list | length }}",
            "t/text.j2": "{{ data.get('k') }} {{ data.k }} {{ brand['url'] }}",
        },
    )
    rendered = renderer.render(channel="email", template="t", context={"data": {"k": "v"}})
    assert rendered.subject == "Acme 1"  # data.items is the method, as in Jinja
    assert rendered.text == "v v https://acme.example"


def test_a_missing_key_is_an_error_naming_it(tmp_path: Path) -> None:
    renderer = _write(tmp_path, {"t/subject.j2": "Hi {{ user.name }}", "t/text.j2": "x"})
    with pytest.raises(errors.TemplateError, match="'dict object' has no attribute 'name'"):
        renderer.render(channel="email", template="t", context={"user": {}})
    with pytest.raises(errors.TemplateError, match="'user' is undefined"):
        renderer.render(channel="email", template="t", context={})


def test_unsafe_attributes_stay_refused(tmp_path: Path) -> None:
    renderer = _write(tmp_path, {"t/subject.j2": "{{ data.__class__.__mro__ }}", "t/text.j2": "x"})
    with pytest.raises(errors.TemplateError):
        renderer.render(channel="email", template="t", context={"data": {}})


@hypothesis.settings(max_examples=2000, deadline=None)
@hypothesis.given(st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x85\u2028ab", max_size=40))
def test_tidy_text_matches_the_line_by_line_rule(text: str) -> None:
    assert _tidy_text(text) == "\n".join(line.rstrip() for line in text.strip().splitlines())


@pytest.mark.parametrize(
    ("raw", "subject"), [("  Hi\n there \r\n", "Hi there"), ("plain", "plain")]
)
def test_subjects_are_one_line(raw: str, subject: str) -> None:
    assert _one_line("t", raw) == subject


def test_an_empty_subject_is_an_error() -> None:
    with pytest.raises(errors.TemplateError, match="the subject is empty"):
        _one_line("t", " \n ")


def test_a_part_rendered_twice_with_a_set_leaves_no_trace(tmp_path: Path) -> None:
    # Parts render straight from their compiled root: each render still gets a context
    # of its own, so a {% set %} in one message never leaks into the next.
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "subject.j2").write_text("{% if first is defined %}{% set x = 1 %}{% endif %}"
                                               "{{ x | default('none') }}")  # fmt: skip
    (tmp_path / "t" / "text.j2").write_text("{{ 'a' }}")
    renderer = Renderer(tmp_path)
    first = renderer.render(channel="email", template="t", context={"first": True})
    second = renderer.render(channel="email", template="t", context={})
    assert (first.subject, second.subject) == ("1", "none")
