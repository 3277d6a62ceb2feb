"""The declarative rule kinds: one typed spec per kind, each with ``check(text) -> RuleResult``.

Every spec has ``extra="forbid"`` and is chosen by its ``kind`` (:data:`RuleSpec`). Patterns,
keywords, phrases and schemas are matched as data and never evaluated. Load, bind and apply
rules through :mod:`engine.scoring.rules`.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

import regex
from jsonschema import ValidationError, validators
from jsonschema_specifications import REGISTRY as _META_SCHEMAS
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from referencing.exceptions import Unresolvable

from engine.scoring.label_functions import LabelFunction, RuleError, RuleResult
from engine.specs import Spec

MAX_PATTERN_CHARS = 1000
"""Longest regular expression accepted (longer ones are usually pasted data, not patterns)."""
MAX_TERM_CHARS = 200
"""Longest keyword or phrase accepted."""
REGEX_TIMEOUT_S = 0.5
"""A regex search slower than this on one answer rejects it instead of hanging the worker."""


@functools.lru_cache(maxsize=512)
def _compile(pattern: str, flags: int) -> Any:
    return regex.compile(pattern, flags)


def _snippet(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Rule(Spec):
    """Fields shared by every rule kind."""

    name: str = Field(min_length=1, max_length=100)
    """Unique rule name, shown in verdicts and stats."""
    description: str = ""
    """What the rule is for (shown in the UI)."""

    def check(self, text: str) -> RuleResult:
        """Apply the rule to one answer."""
        raise NotImplementedError

    def _verdict(self, reason: str | None) -> RuleResult:
        return RuleResult(self.name, reason is None, reason or "")


class _RegexRule(_Rule):
    pattern: str = Field(min_length=1)
    """A regular expression (Python syntax), searched anywhere in the answer."""
    ignore_case: bool = False
    """Match without regard to case."""

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str, info: ValidationInfo) -> str:
        where = f"rule {info.data.get('name', '?')!r}: pattern"
        if len(value) > MAX_PATTERN_CHARS:
            raise ValueError(f"{where}: {len(value)} characters; the limit is {MAX_PATTERN_CHARS}")
        try:
            _compile(value, 0)
        except regex.error as err:
            raise ValueError(f"{where}: invalid regular expression: {err}") from None
        return value

    def _search(self, text: str) -> Any:
        flags = regex.IGNORECASE if self.ignore_case else 0
        return _compile(self.pattern, flags).search(text, timeout=REGEX_TIMEOUT_S)

    def _timeout(self) -> RuleResult:
        return self._verdict(f"regex /{_snippet(self.pattern)}/ timed out after {REGEX_TIMEOUT_S:g} s")


class RegexMustMatch(_RegexRule):
    """Reject an answer in which ``pattern`` does not occur."""

    kind: Literal["regex_must_match"] = "regex_must_match"

    def check(self, text: str) -> RuleResult:
        try:
            found = self._search(text)
        except TimeoutError:
            return self._timeout()
        return self._verdict(None if found else f"does not match /{_snippet(self.pattern)}/")


class RegexMustNotMatch(_RegexRule):
    """Reject an answer in which ``pattern`` occurs."""

    kind: Literal["regex_must_not_match"] = "regex_must_not_match"

    def check(self, text: str) -> RuleResult:
        try:
            found = self._search(text)
        except TimeoutError:
            return self._timeout()
        if found is None:
            return self._verdict(None)
        return self._verdict(f"matches /{_snippet(self.pattern)}/ at {_snippet(found.group(0))!r}")


def _terms(value: list[str], info: ValidationInfo) -> list[str]:
    where = f"rule {info.data.get('name', '?')!r}: {info.field_name}"
    terms = [" ".join(t.split()) for t in value]
    if not terms or not all(terms):
        raise ValueError(f"{where}: give at least one non-blank entry, and no blank ones")
    too_long = [t for t in terms if len(t) > MAX_TERM_CHARS]
    if too_long:
        raise ValueError(f"{where}: {_snippet(too_long[0])!r} is longer than {MAX_TERM_CHARS} characters")
    return terms


class KeywordsForbidden(_Rule):
    """Reject an answer that mentions any keyword as a whole word (case-insensitive).

    ``Acme`` matches "ACME's" and "acme" but not "Acmeville"; spaces inside a keyword match
    any run of whitespace.
    """

    kind: Literal["keywords_forbidden"] = "keywords_forbidden"
    keywords: list[str]
    """Words or short phrases, e.g. competitor names."""

    _check_terms = field_validator("keywords")(_terms)

    def check(self, text: str) -> RuleResult:
        # Keywords are escaped: they are matched as literal text, never as patterns.
        parts = sorted((r"\s+".join(map(regex.escape, k.split())) for k in self.keywords), key=len)
        pattern = r"(?<!\w)(?:" + "|".join(reversed(parts)) + r")(?!\w)"
        found = _compile(pattern, regex.IGNORECASE).search(text)
        return self._verdict(f"mentions forbidden keyword {found.group(0)!r}" if found else None)


class ForbiddenPhrases(_Rule):
    """Reject an answer that contains any phrase as a substring (whitespace-insensitive)."""

    kind: Literal["forbidden_phrases"] = "forbidden_phrases"
    phrases: list[str]
    """Phrases such as "as an AI language model"."""
    case_sensitive: bool = False
    """Match case exactly."""

    _check_terms = field_validator("phrases")(_terms)

    def check(self, text: str) -> RuleResult:
        def norm(s: str) -> str:
            s = " ".join(s.split())
            return s if self.case_sensitive else s.casefold()

        haystack = norm(text)
        hit = next((p for p in self.phrases if norm(p) in haystack), None)
        return self._verdict(f"contains forbidden phrase {hit!r}" if hit else None)


class LengthBounds(_Rule):
    """Reject an answer shorter than ``min`` or longer than ``max``."""

    kind: Literal["length_bounds"] = "length_bounds"
    min: int | None = Field(default=None, ge=0)
    """Smallest allowed length (inclusive)."""
    max: int | None = Field(default=None, ge=0)
    """Largest allowed length (inclusive)."""
    unit: Literal["chars", "tokens"] = "chars"
    """``chars``: characters; ``tokens``: whitespace-separated words."""

    @model_validator(mode="after")
    def _ordered(self) -> LengthBounds:
        if self.min is None and self.max is None:
            raise ValueError(f"rule {self.name!r}: give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule {self.name!r}: min {self.min} is larger than max {self.max}")
        return self

    def check(self, text: str) -> RuleResult:
        size = len(text) if self.unit == "chars" else len(text.split())
        if self.min is not None and size < self.min:
            return self._verdict(f"too short: {size} {self.unit} < min {self.min}")
        if self.max is not None and size > self.max:
            return self._verdict(f"too long: {size} {self.unit} > max {self.max}")
        return self._verdict(None)


def _load_json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text.strip()), None
    except (ValueError, RecursionError) as err:
        return None, f"not valid JSON: {err}"


MAX_SCHEMA_DEPTH = 32
"""Deepest nesting of objects and lists accepted in a rule's JSON Schema."""


def _schema_depth(node: Any, depth: int = 0) -> int:
    if depth > MAX_SCHEMA_DEPTH:
        return depth
    if isinstance(node, dict):
        return max([depth, *(_schema_depth(v, depth + 1) for v in node.values())])
    if isinstance(node, list):
        return max([depth, *(_schema_depth(v, depth + 1) for v in node)])
    return depth


def _guarded_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """``pattern`` through the timeout-guarded regex engine of the regex rules (not ``re``)."""
    if not validator.is_type(instance, "string"):
        return
    try:
        found = _compile(pattern, 0).search(instance, timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        yield ValidationError(f"pattern /{_snippet(pattern)}/ timed out after {REGEX_TIMEOUT_S:g} s")
        return
    except regex.error as err:
        yield ValidationError(f"pattern /{_snippet(pattern)}/ is not a valid regex: {err}")
        return
    if not found:
        yield ValidationError(f"{_snippet(instance, 80)!r} does not match /{_snippet(pattern)}/")


def _guarded_pattern_properties(
    validator: Any, properties: dict[str, Any], instance: Any, schema: Any
) -> Any:
    """``patternProperties`` with the same guarded regex engine."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in properties.items():
        for key, value in instance.items():
            try:
                hit = _compile(pattern, 0).search(key, timeout=REGEX_TIMEOUT_S)
            except TimeoutError:
                yield ValidationError(f"patternProperties /{_snippet(pattern)}/ timed out")
                return
            if hit:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _guarded_validator(schema: dict[str, Any]) -> Any:
    """The schema's validator class with its regex keywords on the timeout-guarded engine."""
    base = validators.validator_for(schema)
    return validators.extend(
        base, {"pattern": _guarded_pattern, "patternProperties": _guarded_pattern_properties}
    )


class JsonSchemaRule(_Rule):
    """Reject an answer that is not JSON valid against ``schema`` (remote ``$ref`` never fetched).

    The schema's ``pattern``/``patternProperties`` run on the same timeout-guarded regex engine
    as the regex rules, its nesting is bounded, and a schema whose ``$ref`` recurses without end
    is refused when the rule is made.
    """

    kind: Literal["json_schema"] = "json_schema"
    schema_: dict[str, Any] = Field(alias="schema")
    """A JSON Schema (draft picked from ``$schema``, default 2020-12)."""

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        try:
            validators.validator_for(value).check_schema(value)
        except Exception as err:  # SchemaError and friends: report, never crash the form
            msg = getattr(err, "message", str(err))
            raise ValueError(
                f"rule {info.data.get('name', '?')!r}: schema: invalid JSON Schema: {msg}"
            ) from None
        if _schema_depth(value) > MAX_SCHEMA_DEPTH:
            raise ValueError(
                f"rule {info.data.get('name', '?')!r}: schema: nested deeper than {MAX_SCHEMA_DEPTH} levels"
            )
        validator = _guarded_validator(value)(value, registry=_META_SCHEMAS)
        probes: tuple[Any, ...] = (None, {}, [], "", 0, {"a": {"a": {}}}, [[[]]])
        for probe in probes:
            try:
                list(validator.iter_errors(probe))
            except RecursionError:
                raise ValueError(
                    f"rule {info.data.get('name', '?')!r}: schema: a $ref refers back to itself "
                    'without end (e.g. {"$ref": "#"})'
                ) from None
            except Exception:  # an unresolvable remote $ref: reported when the rule runs
                break
        return value

    def check(self, text: str) -> RuleResult:
        value, error = _load_json(text)
        if error:
            return self._verdict(error)
        # Only the bundled meta-schemas resolve: a $ref to a URL must not make a network call.
        validator = _guarded_validator(self.schema_)(self.schema_, registry=_META_SCHEMAS)
        try:
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        except Unresolvable as err:
            return self._verdict(f"schema cannot be applied: unresolvable $ref {err}")
        except RecursionError:
            return self._verdict("schema cannot be applied: its $ref recurses without end")
        if not errors:
            return self._verdict(None)
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in errors[0].absolute_path)
        return self._verdict(f"schema violation at ${where}: {_snippet(errors[0].message, 200)}")


_MISSING = object()


class RequiredFields(_Rule):
    """Reject an answer that is not a JSON object with every field present (dotted paths nest)."""

    kind: Literal["required_fields"] = "required_fields"
    fields: list[str] = Field(min_length=1)
    """Field names; ``customer.name`` looks inside the ``customer`` object."""
    allow_empty: bool = False
    """Accept null, "", [] and {} as present values."""

    def check(self, text: str) -> RuleResult:
        obj, error = _load_json(text)
        if error or not isinstance(obj, dict):
            return self._verdict(error or "not a JSON object")
        missing, empty = [], []
        for path in self.fields:
            node: Any = obj
            for part in path.split("."):
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is _MISSING:
                missing.append(path)
            elif not self.allow_empty and (
                node is None or (isinstance(node, str | list | dict) and not node)
            ):
                empty.append(path)
        reasons = [f"missing {', '.join(missing)}"] if missing else []
        reasons += [f"empty {', '.join(empty)}"] if empty else []
        return self._verdict("; ".join(reasons) or None)


class PythonRule(_Rule):
    """A label function from ``<workspace>/rules/*.py``, named here and bound by :func:`bind_rules`."""

    kind: Literal["python"] = "python"
    function: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    """Registered name of the function (``@label_function("name")``); a name, not code."""
    _bound: LabelFunction | None = PrivateAttr(None)

    def check(self, text: str) -> RuleResult:
        if self._bound is None:
            raise RuleError(
                f"rule {self.name!r}: python function {self.function!r} is not bound; "
                "call bind_rules(rules, workspace) first"
            )
        result = self._bound.check(text)
        return RuleResult(self.name, result.passed, result.reason, result.accepted)


RuleSpec = Annotated[
    RegexMustMatch
    | RegexMustNotMatch
    | KeywordsForbidden
    | ForbiddenPhrases
    | LengthBounds
    | JsonSchemaRule
    | RequiredFields
    | PythonRule,
    Field(discriminator="kind"),
]
"""Any rule spec, chosen by its ``kind``."""
