"""Prompt templates: YAML files with a `system` and a `user` Jinja2 template (resources/prompts/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class PromptTemplate:
    path: str
    system: jinja2.Template | None
    user: jinja2.Template

    @classmethod
    def load(cls, path: str | Path) -> PromptTemplate:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as e:  # its own message says "<unicode string>": name the file and line
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ValueError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', None) or e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
        if not isinstance(data, dict) or not isinstance(data.get("user"), str):
            raise ValueError(f"{path}: a prompt template needs a 'user' string (and optionally 'system')")
        unknown = set(data) - {"system", "user"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected 'system' and 'user'")
        try:
            system = _ENV.from_string(data["system"]) if data.get("system") else None
            return cls(str(path), system, _ENV.from_string(data["user"]))
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"{path}: template line {e.lineno}: {e.message}") from None

    def messages(self, **variables) -> list[dict]:
        """Chat messages for one request; `input` defaults to empty so it is never silently lost."""
        variables.setdefault("input", "")
        try:
            msgs = [{"role": "system", "content": self.system.render(**variables).strip()}] if self.system else []
            msgs.append({"role": "user", "content": self.user.render(**variables).strip()})
        except jinja2.UndefinedError as e:
            raise ValueError(f"{self.path}: {e.message}") from None
        return msgs
