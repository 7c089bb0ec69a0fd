"""Command-line helpers shared by the Hydra entry points (``rle.train``, ``rle.evaluate``)."""

from __future__ import annotations

import re
import sys

from omegaconf import DictConfig, OmegaConf

from rle import paths

__all__ = ["exit_on_override_error", "override_error"]


def override_error(argv: list[str], config_name: str) -> str | None:
    """Compose the overrides once and explain an unknown key with the valid keys of its node.

    Hydra lists the valid options of an unknown group choice itself; for an unknown key it only
    says "not in struct". Multirun sweeps and Hydra flags are left to Hydra.

    Args:
        argv: The command-line arguments after the program name.
        config_name: The primary config (``train`` or ``evaluate``).

    Returns:
        A message for the user, or ``None`` when the overrides compose (or are not checked here).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    if any(a in ("-m", "--multirun") for a in argv):
        return None
    overrides = [
        a for a in argv if "=" in a and not a.startswith(("-", "hydra.", "+hydra", "~hydra"))
    ]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(paths.CONF_DIR), version_base="1.3"):
            try:
                compose(config_name=config_name, overrides=overrides)
                return None
            except ConfigCompositionException as e:
                m = re.search(r"Could not override '([^']+)'", str(e))
                if m is None or "not in struct" not in str(e.__cause__ or e):
                    return None
                bad = m.group(1)
                parent, _, leaf = bad.rpartition(".")
                rest = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith(bad)]
                base = compose(config_name=config_name, overrides=rest)
                node = OmegaConf.select(base, parent) if parent else base
                valid = sorted(str(k) for k in node) if isinstance(node, DictConfig) else []
                where = f"'{parent}'" if parent else "the top level"
                return (
                    f"Unknown config key '{bad}': {where} has no key '{leaf}'. "
                    f"Valid keys of {where}: {', '.join(valid)}. "
                    f"To add a new key on purpose, write +{bad}=..."
                )
    except Exception:  # the check is a courtesy; Hydra reports anything else itself
        return None
    finally:
        GlobalHydra.instance().clear()


def exit_on_override_error(config_name: str) -> None:
    """Print the :func:`override_error` message and exit 2 when ``sys.argv`` has an unknown key."""
    message = override_error(sys.argv[1:], config_name)
    if message:
        print(f"Error: {message}", file=sys.stderr)  # noqa: T201 (CLI error before logging exists)
        sys.exit(2)
