"""Versioned prompt templates: ``prompts/<step>.<version>.toml`` files shipped in the package.

A template's identity (``step/version#hash``) is part of every cache key, so editing a template
without bumping its version still invalidates what was cached under the old text.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

CHAT_STEPS = ("recognize", "relate", "refer", "converse", "describe")
_FILE = re.compile(r"^(?P<step>[a-z_]+)\.(?P<version>v\d+)\.toml$")


class PromptError(ValueError):
    """A missing or malformed template."""


@dataclass(frozen=True)
class PromptTemplate:
    step: str
    version: str
    about: str
    system: str
    user: str
    text: str  # the file as shipped
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:12]

    @property
    def id(self) -> str:
        return f"{self.step}/{self.version}#{self.digest}"

    def render_user(self, **values: Any) -> str:
        try:
            return string.Template(self.user).substitute(values)
        except KeyError as e:
            raise PromptError(f"prompt {self.step}/{self.version} needs a value for ${e.args[0]}") from None

    def messages(self, inputs: dict[str, Any], image_url: str | None = None, **values: Any) -> list[dict[str, Any]]:
        """OpenAI chat messages: the system text, then the user text (and the image, when given)."""
        user = self.render_user(input=json.dumps(inputs, ensure_ascii=False), **values)
        content: str | list[dict[str, Any]] = user
        if image_url is not None:
            content = [{"type": "text", "text": user}, {"type": "image_url", "image_url": {"url": image_url}}]
        out: list[dict[str, Any]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        out.append({"role": "user", "content": content})
        return out


def _parse(name: str, text: str) -> PromptTemplate:
    m = _FILE.match(name)
    if m is None:
        raise PromptError(f"prompt file {name}: expected <step>.v<N>.toml")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PromptError(f"prompt file {name}: not valid TOML ({e})") from None
    if data.get("step") != m["step"] or data.get("version") != m["version"]:
        raise PromptError(f"prompt file {name}: step/version inside ({data.get('step')}/{data.get('version')}) differ from its name")
    system = str(data.pop("system", "")).strip()
    user = str(data.pop("user", "")).strip()
    about = str(data.pop("about", ""))
    step, version = data.pop("step"), data.pop("version")
    return PromptTemplate(step, version, about, system, user, text, data)


@cache
def all_templates() -> dict[tuple[str, str], PromptTemplate]:
    """Every shipped template by (step, version)."""
    out = {}
    for entry in sorted(resources.files("tg_synth").joinpath("prompts").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            t = _parse(entry.name, entry.read_text(encoding="utf-8"))
            out[(t.step, t.version)] = t
    return out


def versions(step: str) -> list[str]:
    return sorted((v for s, v in all_templates() if s == step), key=lambda v: int(v[1:]))


def get_template(step: str, version: str | None = None) -> PromptTemplate:
    """A step's template: ``version`` or, when ``None``, the newest."""
    known = versions(step)
    if not known:
        steps = sorted({s for s, _ in all_templates()})
        raise PromptError(f"no prompt template for step {step!r}; steps with templates: {steps}")
    version = version or known[-1]
    if version not in known:
        raise PromptError(f"prompt {step!r} has no version {version!r}; available: {known}")
    return all_templates()[(step, version)]


@dataclass(frozen=True)
class PromptSet:
    """The templates one run uses, chosen by ``[prompts] step = "vN"`` (default: newest)."""

    chosen: dict[str, PromptTemplate]

    @classmethod
    def select(cls, choice: dict[str, str] | None = None) -> PromptSet:
        choice = choice or {}
        steps = sorted({s for s, _ in all_templates()})
        unknown = set(choice) - set(steps)
        if unknown:
            raise PromptError(f"[prompts] names unknown step(s) {sorted(unknown)}; known: {steps}")
        return cls({s: get_template(s, choice.get(s)) for s in steps})

    def __getitem__(self, step: str) -> PromptTemplate:
        return self.chosen[step]

    def ids(self) -> dict[str, str]:
        return {s: t.id for s, t in self.chosen.items()}


def pick(template: PromptTemplate, section: str, rng_index: int, key: str = "questions") -> string.Template:
    """One phrasing of a question list in the ``questions`` template, by index (wrapped)."""
    try:
        options = template.extra[section][key]
    except KeyError:
        raise PromptError(f"prompt {template.step}/{template.version} has no [{section}] {key}") from None
    if isinstance(options, str):
        options = [options]
    return string.Template(options[rng_index % len(options)])
