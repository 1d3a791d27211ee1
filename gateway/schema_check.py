"""Structured-output guarantees: a preflight of the client's JSON schema before any tier is
called, and validation of the tier's output against it afterwards.

>>> checker = SchemaChecker(cache_size=1024)
>>> checked = checker.check({"type": "object", "properties": {"n": {"type": "integer"}}})
>>> checked.validate_output('{"n": 3}', "stop")
{'n': 3}
>>> checker.check({"type": "array", "uniqueItems": True})
Traceback (most recent call last):
gateway.errors.SchemaUnsupported: the schema uses 1 feature the tier cannot enforce: ...

``check`` raises ``SchemaInvalid`` (400) for a schema that is not a JSON Schema and
``SchemaUnsupported`` (422) listing every feature the pinned tier cannot enforce (the rules,
with their sources, are data in ``gateway.schema_rules``). Verdicts are cached, bounded LRU,
by a hash of the canonical schema. Pure CPU, no I/O: safe to call on the event loop.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jsonschema_rs
import msgspec

from gateway import schema_rules as rules
from gateway.errors import GatewayError, OutputInvalid, SchemaInvalid, SchemaUnsupported
from gateway.schema_finders import declared_types

MAX_OUTPUT_ERRORS: Final = 5  # enough to act on; a broken output can have thousands
MAX_SCHEMA_ERRORS: Final = 10  # meta-schema faults listed in one 400
MAX_MESSAGE_CHARS: Final = 300  # a message quotes the instance; keep problem bodies small


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a keyword holds subschemas: one, a list (``many``) or a map (``many``, ``map``);
    ``quiet``: the subschema is unenforced as a whole, so its own keywords are not listed;
    ``implied``: the instance type the position fixes (property names are strings)."""

    many: bool = False
    map: bool = False
    quiet: int = 0
    implied: frozenset[str] | None = None


_ONE, _LIST, _MAP = _Position(), _Position(many=True), _Position(many=True, map=True)
_FLAT = _Position(implied=frozenset())  # a list of strings: holds no schema, no object
# Every other container is data (enum, const, default, examples, x-*). `items` is listed as a
# list (drafts 4-2019) and walked as one schema when it is an object (2020-12).
_KEYWORD_KIND: Final[dict[str, _Position]] = {
    **dict.fromkeys(("properties", "patternProperties", "$defs", "definitions",
                     "dependencies"), _MAP),
    "dependentSchemas": _Position(many=True, map=True, quiet=1),
    **dict.fromkeys(("additionalProperties", "additionalItems", "unevaluatedItems",
                     "unevaluatedProperties", "contains", "contentSchema"), _ONE),
    **dict.fromkeys(("not", "if", "then", "else"), _Position(quiet=1)),
    "propertyNames": _Position(implied=frozenset({"string"})),
    **dict.fromkeys(("required", "type"), _FLAT),
    **dict.fromkeys(("allOf", "anyOf", "oneOf", "prefixItems", "items"), _LIST),
}  # fmt: skip
_CONTAINERS: Final = (dict, list)
_Applicable = tuple[tuple[rules.Rule, bool], ...]
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")


def path_segment(key: str | int) -> str:
    """``a`` -> ``.a``, ``0`` -> ``[0]``, ``a b`` -> ``["a b"]``."""
    if isinstance(key, int):
        return f"[{key}]"
    return f".{key}" if _IDENT.match(key) else "[" + msgspec.json.encode(key).decode() + "]"


def json_path(parts: list[str | int]) -> str:
    return "$" + "".join(path_segment(p) for p in parts)


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    keyword: str
    message: str
    source: str

    def as_member(self) -> dict[str, str]:
        return {
            "path": self.path,
            "keyword": self.keyword,
            "message": self.message,
            "source": self.source,
        }


@dataclass(slots=True)
class CheckedSchema:
    """A schema that passed preflight. ``unenforced`` lists keywords the tier accepts but checks
    only after generation (``unenforced_at`` says where and why)."""

    schema: dict[str, Any] | bool
    schema_hash: str
    draft: int
    unenforced_at: tuple[Finding, ...]
    _validator: jsonschema_rs.Validator | None = field(default=None, repr=False)

    @property
    def unenforced(self) -> tuple[str, ...]:
        return tuple(sorted({f.keyword for f in self.unenforced_at}))

    def validator(self) -> jsonschema_rs.Validator:
        # Built on first use: generation takes seconds, a build of a 100 KB schema ~15 ms,
        # which would otherwise blow the preflight budget. A race builds it twice, harmlessly.
        if self._validator is None:
            try:
                self._validator = jsonschema_rs.validator_for(
                    self.schema, validate_formats=True, offline=True
                )
            except (ValueError, jsonschema_rs.ReferencingError) as exc:
                # The preflight resolves refs and compiles patterns first, so this is a gap in
                # it: still the schema's fault, never the tier's and never a 500.
                raise SchemaInvalid(
                    "the schema cannot be compiled for output validation",
                    errors=[{"path": "$", "message": str(exc)[:MAX_MESSAGE_CHARS]}],
                ) from None
        return self._validator

    def validate_output(self, text: str, finish_reason: str | None) -> Any:
        """Parse ``text`` and check it against the schema; return the parsed JSON.

        Raises ``OutputInvalid`` (502) with ``reason`` ``truncated`` (finish_reason "length"),
        ``invalid-json`` or ``schema-violation`` (``errors``: first few, by JSON path).
        """
        if finish_reason == "length":
            raise OutputInvalid(
                "the output was truncated at max_tokens before the JSON was complete; "
                "raise max_tokens or ask for less",
                reason="truncated",
                errors=[],
            )
        try:
            value = msgspec.json.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError) as exc:  # TypeError: None
            raise OutputInvalid(
                f"the output is not valid JSON ({exc})",
                reason="invalid-json",
                errors=[{"path": "$", "keyword": None, "message": str(exc)}],
            ) from None
        errors = []
        for error in self.validator().iter_errors(value):
            errors.append(
                {
                    "path": json_path(error.instance_path),
                    "keyword": error.kind.name,
                    "message": error.message[:MAX_MESSAGE_CHARS],
                }
            )
            if len(errors) == MAX_OUTPUT_ERRORS:
                break
        if errors:
            first = errors[0]
            raise OutputInvalid(
                f"the output does not satisfy the schema: {first['keyword']} at {first['path']}",
                reason="schema-violation",
                errors=errors,
            )
        return value


class SchemaChecker:
    """One per app. ``check`` is cached by schema hash (LRU, ``cache_size`` entries), failures
    included, so a client retrying a bad schema costs a dict lookup."""

    def __init__(self, cache_size: int = 1024) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, CheckedSchema | GatewayError] = OrderedDict()
        self._lock = threading.Lock()
        self._regex = jsonschema_rs.validator_for({"format": "regex"}, validate_formats=True)
        self._meta_validators: dict[int, jsonschema_rs.Validator] = {}

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        """Forget every verdict (a benchmark of the uncached path, a change of rules)."""
        with self._lock:
            self._cache.clear()

    def check(self, schema: dict[str, Any] | bool) -> CheckedSchema:
        if not isinstance(schema, dict | bool):
            raise SchemaInvalid(
                "the schema must be a JSON object (or true/false)",
                errors=[{"path": "$", "message": "not an object"}],
            )
        try:
            key = hashlib.sha256(msgspec.json.encode(schema, order="sorted")).hexdigest()
        except RecursionError:  # nested past msgspec's limit: far past vLLM's, never cached
            return self._preflight(schema, "")
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if isinstance(hit, GatewayError):
            raise type(hit)(hit.detail, **hit.members)
        if hit is not None:
            return hit
        try:
            result: CheckedSchema | GatewayError = self._preflight(schema, key)
        except (SchemaInvalid, SchemaUnsupported) as exc:
            result = exc
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if isinstance(result, GatewayError):
            raise result
        return result

    def _meta(self, draft: int) -> jsonschema_rs.Validator:
        # The meta-schemas ship inside jsonschema-rs: nothing is fetched.
        if draft not in self._meta_validators:
            uri = next(u for u, d in rules.DRAFTS.items() if d == draft)
            self._meta_validators[draft] = jsonschema_rs.validator_for(
                {"$schema": uri, "$ref": uri}, offline=True
            )
        return self._meta_validators[draft]

    def _preflight(self, schema: dict[str, Any] | bool, key: str) -> CheckedSchema:
        if schema is False:
            raise _unsupported([Finding("$", "false", "the `false` schema admits no value",
                                        rules.XGRAMMAR)])  # fmt: skip
        draft = _draft(schema)
        faults = [
            {"path": json_path(e.instance_path), "message": e.message[:MAX_MESSAGE_CHARS]}
            for e, _ in zip(
                self._meta(draft).iter_errors(schema), range(MAX_SCHEMA_ERRORS), strict=False
            )
        ]
        if faults:
            raise SchemaInvalid(
                f"the schema is not a valid JSON Schema at {faults[0]['path']}: "
                f"{faults[0]['message']}",
                errors=faults,
            )
        walk = _Walk(schema, draft, self._regex)
        walk.schema(schema)
        if walk.too_deep is not None:
            raise SchemaUnsupported(
                f"the schema nests deeper than {rules.MAX_NESTING} levels",
                errors=[Finding(walk.too_deep, "nesting", "objects and arrays may nest at most "
                                f"{rules.MAX_NESTING} levels", rules.VLLM_NESTING).as_member()],
            )  # fmt: skip
        if walk.invalid:
            first = walk.invalid[0]
            raise SchemaInvalid(
                f"the schema is not usable at {first['path']}: {first['message']}",
                errors=walk.invalid,
            )
        if walk.rejected:
            raise _unsupported(walk.rejected)
        return CheckedSchema(schema, key, draft, tuple(walk.unenforced))


def _unsupported(found: list[Finding]) -> SchemaUnsupported:
    where = ", ".join(f"{f.keyword} at {f.path}" for f in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    noun = "feature" if len(found) == 1 else "features"
    return SchemaUnsupported(
        f"the schema uses {len(found)} {noun} the tier cannot enforce: {where}{more}",
        errors=[f.as_member() for f in found],
    )


def _draft(schema: dict[str, Any] | bool) -> int:
    uri = schema.get("$schema") if isinstance(schema, dict) else None
    if uri is None:
        return rules.DEFAULT_DRAFT
    norm = uri.rstrip("#") if isinstance(uri, str) else None
    for known, draft in rules.DRAFTS.items():
        if norm is not None and norm.split("://", 1)[-1] == known.split("://", 1)[-1]:
            return draft
    raise SchemaInvalid(
        "unknown $schema: use draft-04, -06, -07, 2019-09 or 2020-12 (the default)",
        errors=[{"path": "$.$schema", "message": f"unknown meta-schema {uri!r}"}],
    )


def _applies(rule: rules.Rule, types: frozenset[str] | None, draft: int) -> bool:
    if draft not in rule.drafts:
        return False
    if types is None:
        return rule.untyped
    return rule.typed and (not rule.types or bool(types & rule.types))


class _Walk:
    """One pass over the schema document: every subschema, with its JSON path kept as a stack
    of parts and rendered only when something is found (most objects find nothing)."""

    def __init__(self, root: Any, draft: int, regex: jsonschema_rs.Validator) -> None:
        self.root, self.draft, self.regex = root, draft, regex
        self.parts: list[str | int] = []
        self.rejected: list[Finding] = []
        self.unenforced: list[Finding] = []
        self.invalid: list[dict[str, str]] = []
        self.too_deep: str | None = None
        self.quiet = 0  # > 0 inside a subschema that is unenforced as a whole
        self._by_shape: dict[tuple[Any, ...], _Applicable] = {}

    def path(self, *more: str | int) -> str:
        return json_path([*self.parts, *more])

    def _deeper(self, depth: int) -> bool:
        if depth <= rules.MAX_NESTING:
            return False
        if self.too_deep is None:
            self.too_deep = self.path()
        return True

    def _into(self, key: str | int, node: Any, depth: int, data: bool = False) -> None:
        self.parts.append(key)
        if data:
            self.data(node, depth)
        else:
            self.schema(node, depth)
        self.parts.pop()

    def _rules_for(self, node: Mapping[str, Any], shape: tuple[Any, ...]) -> _Applicable:
        """The rules that can fire on ``node`` (True: rejecting): those whose trigger keywords
        it holds and that apply to its type. Memoised by ``shape`` (keys, type, implied type,
        quiet): a large schema repeats a handful of shapes thousands of times."""
        _, _, implied, quiet = shape
        types = declared_types(node) or implied
        picked: dict[str, tuple[rules.Rule, bool]] = {}
        for key in node:
            for rule in rules.REJECT_BY_KEY.get(key, ()):
                picked[rule.id] = (rule, True)
            if not quiet:
                for rule in rules.UNENFORCED_BY_KEY.get(key, ()):
                    picked[rule.id] = (rule, False)
        found = tuple(
            (rule, rejecting)
            for rule, rejecting in picked.values()
            if _applies(rule, types, self.draft)
        )
        self._by_shape[shape] = found
        return found

    def schema(self, node: Any, depth: int = 1, implied: frozenset[str] | None = None) -> None:
        """``depth`` counts objects and arrays from the root, as vLLM's nesting check does;
        ``implied``: the instance type the position fixes (property names are strings)."""
        if not isinstance(node, dict):
            return
        if depth > rules.MAX_NESTING:
            self._deeper(depth)
            return
        declared = node.get("type")
        # Before 2019-09 every keyword beside $ref is ignored, by the spec and the validator.
        quiet = bool(self.quiet) or ("$ref" in node and self.draft < 2019)
        shape = (
            tuple(node),
            tuple(declared) if isinstance(declared, list) else declared,
            implied,
            quiet,
        )
        applicable = self._by_shape.get(shape)
        if applicable is None:
            applicable = self._rules_for(node, shape)
        for rule, rejecting in applicable:
            if found := rule.find(node):
                where = self.path()
                (self.rejected if rejecting else self.unenforced).extend(
                    Finding(where, k, rule.message, rule.source) for k in found
                )
        if "$ref" in node:
            self._local_ref(node["$ref"])
        if "pattern" in node or "patternProperties" in node:
            self._patterns(node)
        parts, deeper = self.parts, depth + 1
        for key, value in node.items():
            if not isinstance(value, _CONTAINERS):
                continue
            kind = _KEYWORD_KIND.get(key)
            if kind is _FLAT:  # required, type: lists of strings (the meta-schema saw to it)
                if deeper > rules.MAX_NESTING:
                    self._into(key, value, deeper, data=True)
                continue
            if kind is None:  # enum, const, default, examples, x-*: data
                # a flat list (required, an enum of scalars) holds nothing: it only counts
                nested = isinstance(value, dict) or any(isinstance(v, _CONTAINERS) for v in value)
                if nested or deeper > rules.MAX_NESTING:
                    self._into(key, value, deeper, data=True)
                continue
            if deeper > rules.MAX_NESTING:
                self._into(key, value, deeper, data=True)  # records where, goes no deeper
                continue
            parts.append(key)
            self.quiet += kind.quiet
            if kind.many and isinstance(value, dict if kind.map else list):
                children = value.items() if isinstance(value, dict) else enumerate(value)
                for name, child in children:
                    parts.append(name)
                    self.schema(child, depth + 2)
                    parts.pop()
            elif isinstance(value, dict):  # one schema (also `items` in 2020-12)
                self.schema(value, deeper, kind.implied)
            self.quiet -= kind.quiet
            parts.pop()

    def data(self, value: Any, depth: int) -> None:
        """vLLM's own check reads every nested object, data too: mirror its verdicts there."""
        if self._deeper(depth):
            return
        if isinstance(value, dict):
            types = declared_types(value)
            for rule in rules.REJECT:
                if rule.id not in rules.VLLM_RULE_IDS:
                    continue
                typed = not rule.types or (types and types & rule.types)
                if typed and (found := rule.find(value)):
                    where = self.path()
                    self.rejected += [Finding(where, k, rule.message + " (vLLM checks nested "
                                      "data too)", rule.source) for k in found]  # fmt: skip
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(child, dict | list):
                self._into(key, child, depth + 1, data=True)

    def _local_ref(self, ref: Any) -> None:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            return
        if "~" in ref or "%" in ref:
            return  # refused by rule ref-escaped
        target: Any = self.root
        for part in ref[2:].split("/") if ref != "#" else ():
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                message = f"{ref} points to nothing"
                self.invalid.append({"path": self.path("$ref"), "message": message})
                return

    def _patterns(self, node: Mapping[str, Any]) -> None:
        found: list[tuple[tuple[str, ...], Any]] = [(("pattern",), node.get("pattern"))]
        if isinstance(node.get("patternProperties"), dict):
            found += [(("patternProperties", p), p) for p in node["patternProperties"]]
        for where, pattern in found:
            if isinstance(pattern, str) and not self.regex.is_valid(pattern):
                message = f"{pattern!r} is not a valid regex"
                self.invalid.append({"path": self.path(*where), "message": message})
