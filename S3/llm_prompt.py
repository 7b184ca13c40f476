"""LLM prompts are data: YAML files in ``S3/prompts/`` (``default``, ``cryptolin``) or
any path, with ``name``, ``description`` and ``system`` (the only text the model reads
besides the headlines). A prompt's :attr:`Prompt.hash` is the sha256 of what the model
sees apart from the headlines -- the system text, the reply schema and the user-message
format -- so it keys the verdict cache and names the prompt in evaluation reports:
two prompts compared on the same sample are told apart by it, and renaming a file or
editing its description changes nothing.

>>> p = load_prompt("default")
>>> p.name, len(p.hash), p.short_hash == p.hash[:12]
('default', 64, True)
>>> Prompt(name="renamed", system=p.system).hash == p.hash
True
>>> Prompt(name="default", system=p.system + " ").hash == p.hash
False
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from S1.errors import UserError
from S1.yaml_load import load_file

PROMPTS_DIR = Path(__file__).with_name("prompts")

#: Version of the user message layout ({"items": [{"id", "text"}]}, ASCII JSON): part of the hash.
USER_FORMAT = "items-json-ascii-v1"


#: The structured-output schema every reply must follow (sent as ``response_format`` json_schema).
RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "label": {"type": "string", "enum": ["bullish", "neutral", "bearish"]},
                    "score": {"type": "number", "description": "-1 (very bearish) .. 1 (very bullish)"},
                    "confidence": {"type": "number", "description": "0 .. 1"},
                },
                "required": ["id", "label", "score", "confidence"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}


class Prompt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    system: str = Field(min_length=20)

    @property
    def hash(self) -> str:
        doc = {"system": self.system, "schema": RESPONSE_SCHEMA, "user_format": USER_FORMAT}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=True).encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash[:12]


def available_prompts() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def load_prompt(spec: str | Path = "default") -> Prompt:
    """A prompt by name (``S3/prompts/<name>.yaml``) or by path to a YAML file."""
    spec = str(spec)
    path = Path(spec)
    if not (spec.endswith((".yaml", ".yml")) or path.is_file()):
        path = PROMPTS_DIR / f"{spec}.yaml"
    if not path.is_file():
        raise UserError(f"prompt {spec!r} not found",
                        f"use one of {', '.join(available_prompts())} or a path to a prompt YAML "
                        f"laid out like S3/prompts/default.yaml")
    raw = load_file(path, what="prompt file", fix="lay it out like S3/prompts/default.yaml")
    try:
        prompt = Prompt.model_validate(raw if isinstance(raw, dict) else {})
    except ValidationError as exc:
        first = str(exc).splitlines()[:3]
        raise UserError(f"prompt file {path} is invalid: {' '.join(first)}",
                        "it needs name and system (text, 20+ characters), optional description; "
                        "see S3/prompts/default.yaml") from exc
    if '"items"' not in prompt.system:
        raise UserError(f"prompt {path} never asks for the reply format",
                        'its system text must ask for {"items": [{"id", "label", "score", "confidence"}]}')
    return prompt
