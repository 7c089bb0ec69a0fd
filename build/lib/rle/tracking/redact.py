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

Values that **look like credentials** are redacted whatever their key (:data:`TOKEN_SHAPES`: GitHub
``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``, Hugging Face ``hf_``, ``sk-`` API
keys, ``tok_`` tokens, Slack ``xoxb-``/``xoxp-``, GitLab ``glpat-``, AWS ``AKIA``/``ASIA`` key ids
and JWTs), so ``deploy_key=ghp_...`` is caught although ``deploy_key`` is not a secret name.

Hydra writes the composed config and the overrides verbatim under the run directory
(``outputs/<date>/<time>/.hydra/{config,hydra,overrides}.yaml``, ``multirun/.../multirun.yaml``).
:func:`redact_hydra_output_dir` rewrites those files redacted (still valid YAML, mode 600);
:class:`rle.tracking.sweep.RedactHydraOutputs`, a Hydra callback, runs it when a job starts (right
after Hydra wrote them, before the task runs), when it ends and when the run or multirun ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ALWAYS_SECRET",
    "DEFAULT_SECRET_PATTERN",
    "HYDRA_FILES",
    "REDACTED",
    "TOKEN_SHAPES",
    "Redactor",
    "redact_hydra_files",
    "redact_hydra_output_dir",
]

log = logging.getLogger(__name__)

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

TOKEN_SHAPES = (
    r"gh[pousr]_[A-Za-z0-9]{16,}",  # GitHub classic: personal, OAuth, user, server, refresh
    r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained personal access token
    r"hf_[A-Za-z0-9]{16,}",  # Hugging Face
    r"sk-[A-Za-z0-9_\-]{16,}",  # sk-..., sk-proj-..., sk-ant-... API keys
    r"tok_[A-Za-z0-9_\-]{8,}",  # tok_live_..., tok_test_...
    r"xox[bpoars]-[A-Za-z0-9\-]{10,}",  # Slack bot / user / app tokens
    r"glpat-[A-Za-z0-9_\-]{16,}",  # GitLab personal access token
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key id
    r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}",  # JWT
)
"""Regular expressions of credential-shaped text, redacted wherever it appears (whatever the key).
Each must start a word (``mask-rcnn`` does not hold ``sk-``); the lengths keep short words out."""

_TOKEN_RE = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(TOKEN_SHAPES) + r")")

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
        self._values: list[str] = []
        self.remember(v for k, v in env.items() if k in ALWAYS_SECRET or self.pattern.search(k))

    @property
    def values(self) -> tuple[str, ...]:
        """The literal secret values searched for in text, longest first."""
        return tuple(self._values)

    def remember(self, values: Iterable[Any]) -> None:
        """Add literal secret values to search for in text from now on.

        Values shorter than :data:`MIN_SECRET_CHARS` characters and words such as ``true`` or
        ``none`` are skipped (they would match everywhere); ``None`` is skipped.

        Args:
            values: The values (converted with ``str``).
        """
        known = set(self._values)
        for v in values:
            if v is None or isinstance(v, bool):
                continue
            text = str(v)
            if len(text) >= MIN_SECRET_CHARS and text.strip().lower() not in _NOT_SECRET_VALUES:
                known.add(text)
        self._values = sorted(known, key=len, reverse=True)  # longest first: no partial leftovers

    def learn_tree(self, node: Any, key: str = "") -> None:
        """Remember the values held under secret keys of a nested config.

        They are then redacted in any other text (e.g. an interpolation that copies one into a
        run name). Strings in lists are read as overrides (:meth:`learn_overrides`).

        Args:
            node: A mapping / list tree (e.g. ``OmegaConf.to_container(cfg)``).
            key: The key ``node`` sits under (used for lists and scalars).
        """
        if isinstance(node, Mapping):
            for k, v in node.items():
                if self.is_secret_key(str(k)):
                    self.remember(_leaves(v))
                else:
                    self.learn_tree(v, str(k))
        elif isinstance(node, list | tuple):
            for v in node:
                if isinstance(v, str):
                    self.learn_overrides([v])
                else:
                    self.learn_tree(v, key)

    def learn_overrides(self, overrides: Iterable[str]) -> None:
        """Remember the values of Hydra overrides ``key=value`` whose key is secret.

        Args:
            overrides: Override strings (``+a.b=v``, ``~a``, ``a=v1,v2``); others are ignored.
        """
        for o in overrides:
            key, sep, value = str(o).partition("=")
            if sep and _OVERRIDE_KEY.fullmatch(key) and self.is_secret_key(key.lstrip("+~")):
                self.remember([value, value.strip("'\"")])

    def is_secret_key(self, key: str) -> bool:
        """Whether a name (env var, dotted config key, tag or param name) is secret."""
        if str(key).endswith(_EXEMPT_KEYS):
            return False
        return str(key) in ALWAYS_SECRET or bool(self.pattern.search(str(key)))

    def text(self, value: str) -> str:
        """Replace secret values, credential-shaped tokens and URI passwords inside ``value``."""
        out = value
        for secret in self._values:
            if secret in out:
                out = out.replace(secret, REDACTED)
        out = _USERINFO_PASSWORD.sub(r"\g<head>" + REDACTED + "@", out)
        return _TOKEN_RE.sub(REDACTED, out)

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


_OVERRIDE_KEY = re.compile(r"[+~]{0,2}[A-Za-z_][\w.\-/@]*")


def _leaves(node: Any) -> list[Any]:
    """Every scalar inside a nested container."""
    if isinstance(node, Mapping):
        return [x for v in node.values() for x in _leaves(v)]
    if isinstance(node, list | tuple):
        return [x for v in node for x in _leaves(v)]
    return [node]


# ------------------------------------------------------------------------------- Hydra output files

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
"""Files Hydra writes into each job's output subdirectory (``hydra.output_subdir``, ``.hydra``)."""

MULTIRUN_FILE = "multirun.yaml"
"""File Hydra's basic sweeper writes into the sweep directory (the whole multirun config)."""

FILE_MODE = 0o600
"""Mode of the rewritten files (owner read/write only)."""


def _redact_string(redactor: Redactor, value: str) -> str:
    """Redact one string of a Hydra file.

    A string shaped like overrides (``key=value``, or ``override_dirname``'s ``a=1,b=2``) loses
    the value of every secret key, up to the next ``,key=`` (a value may hold commas, as in a
    sweep ``a=1,2``); then secret text goes from the whole string (:meth:`Redactor.text`).
    """
    first = value.partition(",")[0].partition("=")
    if not (first[1] and _OVERRIDE_KEY.fullmatch(first[0])):
        return redactor.text(value)
    out: list[str] = []
    in_secret = False
    for part in value.split(","):
        key, sep, _ = part.partition("=")
        if sep and _OVERRIDE_KEY.fullmatch(key):
            in_secret = redactor.is_secret_key(key.lstrip("+~"))
            out.append(f"{key}={REDACTED}" if in_secret else part)
        elif not in_secret:
            out.append(part)
    return redactor.text(",".join(out))


def _redact_node(redactor: Redactor, node: Any) -> Any:
    if isinstance(node, Mapping):
        return {
            k: (REDACTED if redactor.is_secret_key(str(k)) else _redact_node(redactor, v))
            for k, v in node.items()
        }
    if isinstance(node, list | tuple):
        return [_redact_node(redactor, v) for v in node]
    if isinstance(node, str):
        return _redact_string(redactor, node)
    return node


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically by a file holding ``text`` with mode :data:`FILE_MODE`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _hydra_files(root: Path, output_subdir: str) -> list[Path]:
    """The Hydra-written YAML files at and below ``root``."""
    found: list[Path] = []
    if (root / MULTIRUN_FILE).is_file():
        found.append(root / MULTIRUN_FILE)
    subdirs = [root / output_subdir] if (root / output_subdir).is_dir() else []
    subdirs += [p for p in root.rglob(output_subdir) if p.is_dir() and p != root / output_subdir]
    for d in subdirs:
        found += [d / name for name in HYDRA_FILES if (d / name).is_file()]
    found += [p for p in root.rglob(MULTIRUN_FILE) if p.is_file() and p != root / MULTIRUN_FILE]
    return found


def redact_hydra_output_dir(
    path: str | os.PathLike[str], redactor: Redactor | None = None, output_subdir: str = ".hydra"
) -> list[Path]:
    """Rewrite the files Hydra wrote under ``path`` with every secret redacted.

    Handles ``<dir>/<output_subdir>/{config,hydra,overrides}.yaml`` and ``multirun.yaml`` at
    ``path`` and anywhere below it, so ``path`` may be one job's output directory, a sweep
    directory or all of ``outputs/``. The values of secret keys found in any of these files (and
    of secret overrides) are learnt first, then every file is rewritten: secret keys keep their
    name and lose their value, override strings ``secret.key=value`` lose their value, and secret
    values, credential-shaped tokens and URI passwords are replaced in all other text (see
    :class:`Redactor`). The result is valid YAML (PyYAML ``safe_dump``; a file that was not valid
    YAML is rewritten as redacted plain text), written atomically with mode ``0o600``; the output
    subdirectory is made ``0o700``. Idempotent: a redacted file is left as it is. Missing paths
    are ignored.

    Args:
        path: Directory to process.
        redactor: The redactor (default: ``Redactor()``, the default pattern and ``os.environ``);
            it is not changed (the learnt values go to a copy).
        output_subdir: Hydra's ``hydra.output_subdir`` (``.hydra`` by default).

    Returns:
        The files that were rewritten (their contents changed).

    Raises:
        OSError: If a file cannot be read or replaced.
    """
    root = Path(path)
    if not root.is_dir():
        return []
    return redact_hydra_files(_hydra_files(root, output_subdir), redactor, output_subdir)


def redact_hydra_files(
    files: list[Path], redactor: Redactor | None, output_subdir: str = ".hydra"
) -> list[Path]:
    """Learn the secrets of ``files`` (Hydra YAML), then rewrite each that holds one.

    See :func:`redact_hydra_output_dir` (``redactor`` is not changed; ``None``: ``Redactor()``).
    """
    import yaml

    base = redactor or Redactor()
    r = Redactor(base.pattern.pattern, environ={})
    r.remember(base.values)
    parsed: dict[Path, tuple[str, Any, bool]] = {}
    for f in files:
        raw = f.read_text(encoding="utf-8")
        try:
            data, ok = yaml.safe_load(raw), True
        except yaml.YAMLError:
            data, ok = None, False
        parsed[f] = (raw, data, ok)
        if ok:
            r.learn_tree(data)
    changed: list[Path] = []
    for f, (raw, data, ok) in parsed.items():
        if ok:
            clean = _redact_node(r, data)
            text = (
                raw
                if clean == data
                else yaml.safe_dump(clean, sort_keys=False, allow_unicode=True, width=1_000_000)
            )
        else:
            text = r.text(raw)
        if text != raw:
            _write_private(f, text)
            changed.append(f)
        elif (f.stat().st_mode & 0o777) != FILE_MODE:
            os.chmod(f, FILE_MODE)
        if f.parent.name == output_subdir:
            with contextlib.suppress(OSError):
                os.chmod(f.parent, 0o700)
    return changed
