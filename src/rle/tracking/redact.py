"""Keep credentials given through the environment out of everything a run logs.

A :class:`Redactor` knows two things: which **names** are secret (environment variables and
config keys matching ``tracking.secret_pattern``, plus ``MLFLOW_TRACKING_PASSWORD`` and
``MLFLOW_TRACKING_TOKEN`` always) and which **values** are secret (the values of the secret
environment variables). Params, tags, the run name and the config artifact pass through it before
they are logged: a secret-named key keeps its name and loses its value, a secret value is
replaced wherever it appears, and ``user:password@`` is cut out of URIs.

The pattern matches whole name parts (split at ``_``, ``.``, ``-``, ``/``), so ``HF_TOKEN`` and
``db.password`` are secret while ``TOKENIZERS_PARALLELISM`` and ``data.tokenizer_vocab_size`` are
not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["ALWAYS_SECRET", "DEFAULT_SECRET_PATTERN", "REDACTED", "Redactor"]

DEFAULT_SECRET_PATTERN = (
    r"(?i)(^|[_.\-/])(password|passwd|passphrase|token|secret|api_?key|access_?key|"
    r"private_?key|credentials?)($|[_.\-/])"
)
"""Default ``tracking.secret_pattern``: a regular expression searched in variable and key names."""

ALWAYS_SECRET = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
"""Environment variables whose values are secret whatever the pattern."""

REDACTED = "***REDACTED***"
"""What a secret value is replaced with."""

MIN_SECRET_CHARS = 4
"""Values shorter than this are not searched for inside other text (they would match everywhere);
a key with a secret name is still redacted whatever its value's length."""

_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})
_USERINFO_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/:@\s]*:)[^/@\s]+@")
_EXEMPT_KEYS = ("secret_pattern",)  # the pattern itself is not a secret


class Redactor:
    """Redact secret names and values.

    Args:
        pattern: Regular expression searched in environment variable names and config keys;
            ``None`` for :data:`DEFAULT_SECRET_PATTERN`.
        environ: The environment to take secret values from (default ``os.environ``).

    Raises:
        re.error: If ``pattern`` is not a valid regular expression.
    """

    def __init__(
        self, pattern: str | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        self.pattern = re.compile(pattern or DEFAULT_SECRET_PATTERN)
        env = os.environ if environ is None else environ
        values = {
            v
            for k, v in env.items()
            if (k in ALWAYS_SECRET or self.pattern.search(k))
            and len(v) >= MIN_SECRET_CHARS
            and v.strip().lower() not in _NOT_SECRET_VALUES
        }
        self._values = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers

    def is_secret_key(self, key: str) -> bool:
        """Whether a name (env var, dotted config key, tag or param name) is secret."""
        if str(key).endswith(_EXEMPT_KEYS):
            return False
        return str(key) in ALWAYS_SECRET or bool(self.pattern.search(str(key)))

    def text(self, value: str) -> str:
        """Replace secret values and URI passwords inside ``value``."""
        out = _USERINFO_PASSWORD.sub(r"\g<head>" + REDACTED + "@", value)
        for secret in self._values:
            if secret in out:
                out = out.replace(secret, REDACTED)
        return out

    def value(self, key: str, value: Any) -> Any:
        """Redact one key's value: all of it for a secret key, else secret text inside it."""
        if self.is_secret_key(key):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        return value

    def mapping(self, items: Mapping[str, Any]) -> dict[str, Any]:
        """Redact the values of a flat mapping (params, tags)."""
        return {str(k): self.value(str(k), v) for k, v in items.items()}

    def tree(self, node: Any, key: str = "") -> Any:
        """Redact a nested container (a resolved config): keys kept, secret values replaced."""
        if isinstance(node, Mapping):
            return {
                k: (REDACTED if self.is_secret_key(str(k)) else self.tree(v, str(k)))
                for k, v in node.items()
            }
        if isinstance(node, list | tuple):
            return [self.tree(v, key) for v in node]
        if isinstance(node, str):
            return self.text(node)
        return node

    def override(self, override: str) -> str:
        """Redact one Hydra override ``key=value`` (secret key: the value goes)."""
        key, sep, value = override.partition("=")
        if sep and self.is_secret_key(key.lstrip("+~")):
            return f"{key}={REDACTED}"
        return self.text(override)
