"""The keys of a sweep file that turn it into a study: ``report.margin``, ``report.contrasts`` and the grid's
``seed: {min: 3, max: 10}``, as pydantic models and the checks made when the sweep is planned.

- ``report.margin`` (a number > 0, in the report metric's units; no default):
  with it every contrast can also be found "equivalent" (|Δ| < margin, TOST);
- ``report.contrasts``: ``baseline`` (the default: every configuration against
  ``report.baseline``) or a list of pairs ``[a, b]`` of configuration labels,
  Δ = a - b; the Holm family is exactly these pairs. A label is the
  configuration's grid values as the report writes them (``loss=focal``), its
  values alone (``focal``) when that names one configuration, or a mapping of
  grid values (``{loss: focal}``);
- a grid's ``seed`` is a list (a fixed design) or ``{min, max}`` (sequential
  seeds, :mod:`lossbench.experiments.sequential`; seeds 0, 1, ... up to max - 1).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from lossbench.config import StrictModel, describe_validation_error
from lossbench.errors import UserError
from lossbench.experiments.sequential import MIN_PAIRS

#: the most seeds a sequential grid may ask for (its boundaries are simulated once per level)
MAX_SEEDS = 50

Label = str | dict[str, Any]


class StudyOptions(StrictModel):
    """The ``report:`` keys of a study: the equivalence margin and the declared contrasts."""

    margin: float | None = Field(
        None, gt=0, description="equivalence margin in the report metric's units (points for percentages): a "
        "contrast whose difference is surely within ± margin is 'equivalent'; no default, so no equivalence claim "
        "unless you declare one")
    contrasts: Literal["baseline"] | list[tuple[Label, Label]] = Field(
        "baseline", description="pairs [a, b] of configuration labels to compare (Δ = a − b), e.g. "
        "[[focal, ce], [ldam, ce]]; default baseline: every configuration against report.baseline")

    @field_validator("contrasts", mode="before")
    @classmethod
    def _numbers_are_labels(cls, v: Any) -> Any:
        """A grid value YAML reads as a number or a boolean (``[0.01, 0.1]``) names a configuration as its text."""
        if not isinstance(v, list):
            return v
        return [[str(x) if isinstance(x, (int, float, bool)) else x for x in pair] if isinstance(pair, list) else pair
                for pair in v]


class SeedRange(StrictModel):
    """A grid's ``seed: {min: 3, max: 10}``: seeds added in rounds until every declared contrast is decided."""

    min: int = Field(MIN_PAIRS, ge=MIN_PAIRS, description=f"seeds every configuration runs first (>= {MIN_PAIRS}: "
                     "a verdict needs 3 paired seeds)")
    max: int = Field(10, le=MAX_SEEDS, description="seeds a configuration runs at most")

    @model_validator(mode="after")
    def _max_not_below_min(self) -> "SeedRange":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min}); use max >= min")
        return self

    @property
    def seeds(self) -> list[int]:
        """Every seed a configuration may run, in the order they are added."""
        return list(range(self.max))


class _SeedDocument(StrictModel):
    seed: SeedRange


def parse_seed_entry(value: Any, source: str) -> list[Any] | SeedRange:
    """A grid's ``seed`` entry: a list stays a list (a fixed design); a mapping is a :class:`SeedRange`."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        raise UserError(f"{source}: grid.seed: {value!r}; give a list of seeds, e.g. [0, 1, 2], or "
                        "{min: 3, max: 10} to add seeds until the answer is known")
    try:
        return _SeedDocument.model_validate({"seed": value}).seed
    except ValidationError as err:
        raise UserError(describe_validation_error(err, f"{source}: grid", _SeedDocument)) from None


def _label_text(label: Label) -> str:
    return ", ".join(f"{k}={v}" for k, v in label.items()) if isinstance(label, dict) else str(label)


def find_configuration(label: Label, configurations: dict[str, dict[str, Any]]) -> str | None:
    """The configuration label (as the report writes it) that ``label`` names, or None: the label itself, the
    configuration's grid values alone (``focal``; ``focal, 0.1``) or a mapping of some of its grid values, each
    only when it names exactly one configuration."""
    if isinstance(label, dict):
        found = [name for name, values in configurations.items()
                 if all(k in values and str(values[k]) == str(v) for k, v in label.items())]
    elif str(label) in configurations:
        return str(label)
    else:
        found = [name for name, values in configurations.items()
                 if ", ".join(str(v) for v in values.values()) == str(label)]
    return found[0] if len(found) == 1 else None


#: how a configuration's row scored with post-hoc logit adjustment (``report.posthoc_la``) is labelled; a
#: declared contrast may name it, e.g. ``["loss=logit_adjusted(tau=1)", "loss=ce + post-hoc LA"]``
POSTHOC_LA = " + post-hoc LA"


def posthoc_label(configuration: str) -> str:
    """The label of ``configuration``'s runs scored with post-hoc logit adjustment."""
    return configuration + POSTHOC_LA


def is_posthoc_label(label: str) -> bool:
    return label.endswith(POSTHOC_LA)


def _find_label(label: Label, configurations: dict[str, dict[str, Any]], posthoc: bool) -> str | None:
    """:func:`find_configuration`, and with ``posthoc`` (report.posthoc_la) also ``<configuration> + post-hoc
    LA``: that configuration's runs scored with post-hoc logit adjustment."""
    if posthoc and isinstance(label, str) and is_posthoc_label(label):
        base = find_configuration(label.removesuffix(POSTHOC_LA), configurations)
        return None if base is None else posthoc_label(base)
    return find_configuration(label, configurations)


def resolve_contrasts(contrasts: Literal["baseline"] | list[tuple[Label, Label]], baseline: str,
                      configurations: dict[str, dict[str, Any]], source: str, posthoc: bool = False
                      ) -> list[tuple[str, str]]:
    """The declared pairs as configuration labels; one line naming the first label that names no single
    configuration (with the labels there are), or a pair of one configuration with itself, or a repeated pair.

    ``configurations``: label -> its grid values (seed aside), in grid order; ``baseline``: the label of the
    report's baseline, against which ``contrasts: baseline`` compares every other configuration. ``posthoc``
    (report.posthoc_la): a label may also name a configuration's post-hoc logit-adjusted row
    (:data:`POSTHOC_LA`); the report then checks that the configuration trains plain CE.
    """
    if contrasts == "baseline":
        return [(name, baseline) for name in configurations if name != baseline]
    known = "; ".join(configurations) or "none"
    hint = f" (or one of them + '{POSTHOC_LA.strip()}')" if posthoc else ""
    pairs: list[tuple[str, str]] = []
    for i, pair in enumerate(contrasts, 1):
        names = []
        for label in pair:
            name = _find_label(label, configurations, posthoc)
            if name is None:
                raise UserError(f"{source}: report.contrasts: pair {i} names {_label_text(label)!r}, which is not "
                                f"one configuration of the grid{hint}; the configurations are: {known}")
            names.append(name)
        if names[0] == names[1]:
            raise UserError(f"{source}: report.contrasts: pair {i} compares {names[0]} with itself; name two "
                            "different configurations")
        if tuple(names) in pairs or tuple(reversed(names)) in pairs:
            raise UserError(f"{source}: report.contrasts: pair {i} ({names[0]} vs {names[1]}) is declared twice; "
                            "each question once (Holm's family counts every pair)")
        pairs.append((names[0], names[1]))
    return pairs
