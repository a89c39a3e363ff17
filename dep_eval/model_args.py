"""One reading of option values: ``--model_args``, environment switches, engine arguments.

lm-eval already types ``--model_args`` (``simple_parse_args_string``: ``true``/``false``,
``none``, numbers; the rest stay strings), and Python callers pass real values. What is left
is to give a value the type of the dataclass field (or engine argument) it fills, which
``coerce`` does, and to read a boolean, which ``to_bool`` does with one vocabulary for every
switch of dep-eval: ``true``/``false``, ``yes``/``no``, ``1``/``0`` (any case). Anything else
is refused with the name of the field, since a typo such as ``use_his=flase`` must not be
read as either value. Kept import-light: the lm-eval start-up hook reads its switch with it.
"""

from __future__ import annotations

import types
import typing
from typing import Any

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def to_bool(name: str, value: Any) -> bool:
    """``value`` as a boolean, or ValueError naming ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(
        f"{name}={value!r} must be true or false ({'/'.join(TRUE_WORDS)} or "
        f"{'/'.join(FALSE_WORDS)})"
    )


def coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` (a string, bool or number) as the type ``hint`` of the field ``name``.

    ``X | None`` takes None and the string ``none``; ``bool`` goes through ``to_bool``;
    ``int``, ``float`` and ``str`` through their constructors, so ``"3"`` is 3 and ``"3.5"``
    is refused for an ``int``. Errors name the field and the type it needs.
    """
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    if value is None or (
        type(None) in options and isinstance(value, str) and value.strip().lower() == "none"
    ):
        return None
    target = next((option for option in options if option is not type(None)), str)
    if target is bool:
        return to_bool(name, value)
    if target is int and isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be int")
    if target is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name}={value!r} must be int")
    if target is Any:
        return value
    try:
        return target(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}={value!r} must be {target.__name__}") from error
