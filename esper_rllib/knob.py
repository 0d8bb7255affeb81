"""A knob: one setting a user (``--set key=value``), a profile, a preset or a Tune sweep can
change, declared once as a typed entry: its default, type, allowed values, help line, where it
goes, and whether only an online run can use it.

The tables of entries live beside the code that reads them: the env's in ``run.config`` (bounds
from ``envs.config``), the network's in ``model.model_config``, the loss's in
``ppo.learner_config``; ``run.config.KNOBS`` joins them. Each consumer's defaults and validation
(the module's model_config, the learner's learner_config_dict, critic-fit's allowed set, the
decomposition's matching, ``esper-rllib knobs``) derive from the entries. This module imports
nothing of the project, so every layer may use it.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A bad knob, profile or preset: one line naming the key, what was wrong, what is allowed."""


# Where a knob goes.
ENV = "env kwarg"
MODEL = "model_config"
LEARNER = "learner_config_dict"
TRAINING = "PPOConfig.training"
ENV_RUNNERS = "PPOConfig.env_runners"
RESOURCES = "resources"
FAULT = "PPOConfig.fault_tolerance"
RUN = "run"

_NONE_WORDS = ("none", "null")
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class Knob:
    default: Any
    type: type  # bool, int, float, str, or tuple (of positive ints, "a,b" on the command line)
    where: str
    help: str
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive lower bound (e.g. 0 for "strictly positive")
    optional: bool = False  # None allowed ("none" on the command line)
    key: str | None = None  # name at the destination when it differs from the knob's
    # False where the builder derives other settings from the value (no Tune search space).
    searchable: bool = True
    pattern: str | None = None  # a str knob's allowed form, as a regex (its own text in help)
    # Why an offline critic fit cannot set it (a knob of the online recipe only), or None. The
    # decomposition matches fit cells and online trials on these too.
    online_only: str | None = None

    def allowed(self) -> str:
        if self.choices:
            text = " | ".join(map(str, self.choices))
        elif self.pattern:
            text = self.pattern
        elif self.type is bool:
            text = "true | false"
        elif self.type is tuple:
            text = "comma-separated ints >= 1"
        elif self.maximum is not None:
            text = f"{self.minimum:g} <= {self.type.__name__} <= {self.maximum:g}"
        elif self.minimum is not None:
            text = f"{self.type.__name__} >= {self.minimum:g}"
        elif self.above is not None:
            text = f"{self.type.__name__} > {self.above:g}"
        else:
            text = self.type.__name__
        return f"{text} | none" if self.optional else text

    def parse(self, name: str, text: str) -> Any:
        """Value of a command-line string, typed per the knob."""
        raw = text.strip()
        if self.optional and raw.lower() in _NONE_WORDS:
            return None
        try:
            if self.type is bool:
                value: Any = _BOOL_WORDS[raw.lower()]
            elif self.type is int:
                value = int(raw)
            elif self.type is float:
                value = float(raw)
            elif self.type is tuple:
                value = tuple(int(part) for part in raw.split(","))
            else:
                value = raw
        except (KeyError, ValueError):
            allowed = self.allowed()
            raise ConfigError(f"{name}={text!r}: not a valid value; allowed: {allowed}") from None
        return self.check(name, value)

    def check(self, name: str, value: Any) -> Any:
        """The value, validated (ints accepted for floats); ConfigError otherwise."""
        bad = ConfigError(f"{name}={value!r}: not allowed; allowed: {self.allowed()}")
        if value is None:
            if self.optional:
                return None
            raise bad
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is tuple and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise bad
        if self.type is float and math.isnan(value):
            raise bad
        if self.choices and value not in self.choices:
            close = difflib.get_close_matches(str(value), list(map(str, self.choices)), n=1)
            if close:  # a near miss says what was meant, as knob names and presets do
                raise ConfigError(f"{name}={value!r}: not allowed; did you mean {close[0]!r}? "
                                  f"(allowed: {self.allowed()})")
            raise bad
        numbers = value if self.type is tuple else (value,)
        if self.type is tuple and not (numbers and all(type(v) is int for v in numbers)):
            raise bad
        if self.minimum is not None and min(numbers) < self.minimum:
            raise bad
        if self.maximum is not None and max(numbers) > self.maximum:
            raise bad
        if self.above is not None and min(numbers) <= self.above:
            raise bad
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise bad
        return value


def resolve_table(table: Mapping[str, Knob], given: Mapping[str, Any] | None,
                  where: str) -> dict[str, Any]:
    """Every entry of ``table`` at its default, overlaid with ``given``, validated: a
    ConfigError names ``where[key]``, the value and what is allowed."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(table)}")
    out = {name: knob.default for name, knob in table.items()}
    for name, value in given.items():
        out[name] = table[name].check(f"{where}[{name!r}]", value)
    return out
