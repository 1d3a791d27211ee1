"""Structured-output guarantees: a preflight of the client's JSON schema before any tier is
called, and validation of the tier's output against it afterwards.

>>> checker = SchemaChecker(cache_size=1024)
>>> checked = checker.check({"type": "object", "properties": {"n": {"type": "integer"}}})
>>> checked.validate_output('{"n": 3}', "stop")
{'n': 3}
>>> checker.check({"type": "string", "pattern": "^(a)\\\\1$"})
Traceback (most recent call last):
gateway.errors.SchemaUnsupported: the schema uses 1 feature the tier cannot enforce: ...

``check`` raises ``SchemaInvalid`` (400) for a schema that is not a JSON Schema and
``SchemaUnsupported`` (422) listing every feature the pinned tier cannot enforce and no lowering
can serve (the rules, with their sources, are data in ``gateway.structured.rules``). Features a
lowering serves (``gateway.structured.lowering``) give a ``CheckedSchema`` whose ``tier_schema`` is
the lowered schema and whose ``lowered_at`` says what was lowered; ``require_strict`` turns them
back into the 422 (``X-Schema-Mode: strict``).

>>> checked = checker.check({"type": "array", "items": {"type": "string"}, "uniqueItems": True})
>>> checked.tier_schema, checked.checked_after
({'type': 'array', 'items': {'type': 'string'}}, ('uniqueItems',))

Verdicts are cached, bounded LRU, by a hash of the canonical schema. Pure CPU, no I/O: safe
to call on the event loop.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jsonschema_rs
import msgspec

from gateway.errors import GatewayError, OutputInvalid, SchemaInvalid, SchemaUnsupported
from gateway.structured import finders as find
from gateway.structured import lowering as low
from gateway.structured import rules as rules

MAX_OUTPUT_ERRORS: Final = 5  # enough to act on; a broken output can have thousands
MAX_SCHEMA_ERRORS: Final = 10  # meta-schema faults listed in one 400
MAX_MESSAGE_CHARS: Final = 300  # a message quotes the instance; keep problem bodies small
MAX_LOWERING_ROUNDS: Final = 4  # a merged allOf may hold allOfs itself: real schemas need 2
_PATTERN_CACHE_SIZE: Final = 4096  # distinct patterns remembered per checker (compiles ~µs-ms)


def shorten(message: str) -> str:
    """Cut a long message in the middle: the quoted instance sits there, the reason at one end
    (``{...} is not of type "number"``, ``Additional properties are not allowed (...)``)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    half = (MAX_MESSAGE_CHARS - 5) // 2
    return message[:half] + " ... " + message[-half:]


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
    """A keyword a rule is about, where it sits. ``at``: the parts of the path of the schema
    object holding it; ``rule``: the rule's id; ``data_key``: set when vLLM found it inside
    data (``default``, ``enum``...) of that object."""

    path: str
    keyword: str
    message: str
    source: str
    at: tuple[str | int, ...] = ()
    rule: str = ""
    data_key: str | None = None

    @property
    def lowerable(self) -> bool:
        rule = rules.BY_ID.get(self.rule)
        if self.data_key is not None:
            return True
        return rule is not None and rule.lower is not None

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
    lowered_at: tuple[Finding, ...] = ()
    lowered: dict[str, Any] | bool | None = None  # what the tier gets, when lowered
    _validator: jsonschema_rs.Validator | None = field(default=None, repr=False)

    @property
    def unenforced(self) -> tuple[str, ...]:
        return tuple(sorted({f.keyword for f in self.unenforced_at}))

    @property
    def tier_schema(self) -> dict[str, Any] | bool:
        """The schema the tier compiles: the lowered one, or the client's."""
        return self.schema if self.lowered is None else self.lowered

    @property
    def lowered_keywords(self) -> tuple[str, ...]:
        return tuple(sorted({f.keyword for f in self.lowered_at}))

    @property
    def checked_after(self) -> tuple[str, ...]:
        """Every keyword checked only after generation: unenforced or lowered."""
        return tuple(sorted({f.keyword for f in self.unenforced_at + self.lowered_at}))

    def require_strict(self) -> None:
        """Strict mode: a schema that needed lowering is refused (422), as before lowering."""
        if self.lowered_at:
            raise _unsupported(list(self.lowered_at))

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
                    errors=[{"path": "$", "keyword": "schema", "message": shorten(str(exc))}],
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
                errors=[{"path": "$", "keyword": "json", "message": shorten(str(exc))}],
            ) from None
        errors = []
        for error in self.validator().iter_errors(value):
            errors.append(
                {
                    "path": json_path(error.instance_path),
                    "keyword": error.kind.name,
                    "message": shorten(error.message),
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
        self._patterns: dict[tuple[str, str], bool] = {}
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
                errors=[{"path": "$", "keyword": "type", "message": "not an object"}],
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
        faults = self._meta_faults(schema, draft, [])
        if faults:
            raise SchemaInvalid(
                f"the schema is not a valid JSON Schema at {faults[0]['path']}: "
                f"{faults[0]['message']}",
                errors=faults,
            )
        walk = _Walk(schema, draft, self._pattern_ok)
        walk.run()
        faults = [f for at, target in walk.unvisited for f in self._meta_faults(target, draft, at)]
        if faults:  # a $ref target outside the usual keywords: the meta-schema never saw it
            raise SchemaInvalid(
                f"the schema is not a valid JSON Schema at {faults[0]['path']}: "
                f"{faults[0]['message']}",
                errors=faults,
            )
        self._verdict(walk)
        lowered_at = tuple(walk.rejected)
        lowered = self._lower(schema, draft, walk.rejected) if lowered_at else None
        return CheckedSchema(schema, key, draft, tuple(walk.unenforced), lowered_at, lowered)

    def _meta_faults(self, schema: Any, draft: int, at: list[str | int]) -> list[dict[str, str]]:
        return [
            {
                "path": json_path([*at, *e.instance_path]),
                "keyword": _keyword_at([*at, *e.instance_path]),
                "message": shorten(e.message),
            }
            for e, _ in zip(
                self._meta(draft).iter_errors(schema), range(MAX_SCHEMA_ERRORS), strict=False
            )
        ]

    def _pattern_ok(self, where: str, pattern: str) -> bool:
        """Does the output validator compile this pattern (``where``: pattern or
        patternProperties)? Python's and XGrammar's readings of a lone ``]`` or ``}`` agree
        with it; jsonschema-rs's strict ECMA ``format: regex`` check does not."""
        key = (where, pattern)
        if key not in self._patterns:
            schema: dict[str, Any] = (
                {"pattern": pattern} if where == "pattern" else {where: {pattern: {}}}
            )
            try:
                jsonschema_rs.validator_for(schema)
                ok = True
            except jsonschema_rs.ValidationError:
                ok = False
            if len(self._patterns) >= _PATTERN_CACHE_SIZE:
                self._patterns.clear()
            self._patterns[key] = ok
        return self._patterns[key]

    def _verdict(self, walk: _Walk) -> None:
        """Raise for what no lowering serves: too deep, not usable, refused outright."""
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
        refused = [f for f in walk.rejected if not f.lowerable]
        if refused:
            raise _unsupported(refused)

    def _lower(self, schema: Any, draft: int, found: list[Finding]) -> Any:
        """The lowered copy of ``schema``: each finding's lowering applied (deepest first, so
        a merge sees lowered branches), then walked again until nothing is refused."""
        copy_ = msgspec.json.decode(msgspec.json.encode(schema))
        for _ in range(MAX_LOWERING_ROUNDS):
            lowering = low.Lowering(copy_, draft)
            for finding in sorted(found, key=lambda f: -len(f.at)):
                node = _node_at(copy_, finding.at)
                if not isinstance(node, dict):
                    continue  # an earlier lowering removed it
                if finding.data_key is not None:
                    low.drop_data(node, finding.data_key)
                    continue
                rule = rules.BY_ID[finding.rule]
                assert rule.lower is not None  # only lowerable findings get here
                keys = [k for k in rule.found(node) if k == finding.keyword] or [finding.keyword]
                if keys[0] in node and not rule.lower(node, keys, lowering):
                    raise _unsupported([finding])
            walk = _Walk(copy_, draft, self._pattern_ok)
            walk.run()
            self._verdict(walk)
            if not walk.rejected:
                return copy_
            found = walk.rejected
        raise _unsupported(found)


def _node_at(doc: Any, at: tuple[str | int, ...]) -> Any:
    for part in at:
        if isinstance(doc, dict) and isinstance(part, str):
            doc = doc.get(part)
        elif isinstance(doc, list) and isinstance(part, int) and part < len(doc):
            doc = doc[part]
        else:
            return None
    return doc


def _keyword_at(parts: list[str | int]) -> str:
    """The keyword a fault at ``parts`` is about: the last name on the path."""
    names = [p for p in parts if isinstance(p, str)]
    return names[-1] if names else "schema"


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
        errors=[
            {"path": "$.$schema", "keyword": "$schema", "message": f"unknown meta-schema {uri!r}"}
        ],
    )


def _applies(rule: rules.Rule, types: frozenset[str] | None, draft: int) -> bool:
    if draft not in rule.drafts:
        return False
    if types is None:
        return rule.untyped
    return rule.typed and (not rule.types or bool(types & rule.types))


class _Walk:
    """One pass over the schema document: every subschema, with its JSON path kept as a stack
    of parts and rendered only when something is found (most objects find nothing). Then the
    targets of local ``$ref``s that no schema keyword reaches (``{"$ref": "#/foo"}``)."""

    def __init__(self, root: Any, draft: int, pattern_ok: Callable[[str, str], bool]) -> None:
        self.root, self.draft, self.pattern_ok = root, draft, pattern_ok
        self.parts: list[str | int] = []
        self.rejected: list[Finding] = []
        self.unenforced: list[Finding] = []
        self.invalid: list[dict[str, str]] = []
        self.too_deep: str | None = None
        self.quiet = 0  # > 0 inside a subschema that is unenforced as a whole
        self.unvisited: list[tuple[list[str | int], Any]] = []  # $ref targets walked after
        self._by_shape: dict[tuple[Any, ...], _Applicable] = {}
        self._seen: set[int] = set()  # ids of the schema objects walked
        self._targets: list[tuple[list[str | int], Any]] = []
        self._data_at: tuple[tuple[str | int, ...], str] | None = None

    def run(self) -> None:
        self.schema(self.root)
        while self._targets:
            at, target = self._targets.pop()
            if id(target) in self._seen:
                continue
            self.unvisited.append((at, target))
            saved, self.parts = self.parts, list(at)
            self.schema(target, len(at) + 1)
            self.parts = saved

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
        """The rules that can fire on ``node`` (True: rejecting): those whose keywords it
        holds and that apply to its type. Memoised by ``shape`` (keys, type, implied type,
        quiet): a large schema repeats a handful of shapes thousands of times."""
        _, _, implied, quiet = shape
        types = find.declared_types(node) or implied
        # what XGrammar converts it as: a schema without `type` but with `properties` is an
        # object to it, and its object rules refuse what they would with `type: object`
        shaped = types if types is not None else find.shape_types(node)
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
            if _applies(rule, shaped if rejecting and rule.source == rules.XGRAMMAR else types,
                        self.draft)
        )  # fmt: skip
        self._by_shape[shape] = found
        return found

    def _found(self, rule: rules.Rule, rejecting: bool, node: Mapping[str, Any]) -> list[str]:
        found = rule.found(node)
        if found and rejecting and rule.source == rules.XGRAMMAR:
            # XGrammar converts one of $ref/const/enum/anyOf/allOf and never reads the rest:
            # what it never reads, it cannot refuse.
            found = [k for k in found if find.xgrammar_reads(node, k)]
        return found

    def schema(self, node: Any, depth: int = 1, implied: frozenset[str] | None = None) -> None:
        """``depth`` counts objects and arrays from the root, as vLLM's nesting check does;
        ``implied``: the instance type the position fixes (property names are strings)."""
        if isinstance(node, list):  # where a schema or a list of names may sit (dependencies)
            self._data_at = None
            self.data(node, depth)
            return
        if not isinstance(node, dict):
            return
        if depth > rules.MAX_NESTING:
            self._deeper(depth)
            return
        self._seen.add(id(node))
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
            if found := self._found(rule, rejecting, node):
                where, at = self.path(), tuple(self.parts)
                (self.rejected if rejecting else self.unenforced).extend(
                    Finding(where, k, rule.message, rule.source, at, rule.id) for k in found
                )
        if "$ref" in node:
            self._local_ref(node["$ref"], node)
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
                    self._data_at = (tuple(parts), key)
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
            types = find.declared_types(value)
            for rule in rules.REJECT:
                if rule.id not in rules.VLLM_RULE_IDS:
                    continue
                typed = not rule.types or (types and types & rule.types)
                if typed and (found := rule.found(value)):
                    where = self.path()
                    # outside a data keyword of a schema object: nothing to drop, no lowering
                    at, data_key, rule_id = (
                        (*self._data_at, rule.id) if self._data_at else ((), None, "")
                    )
                    self.rejected += [Finding(where, k, rule.message + " (vLLM checks nested "
                                      "data too)", rule.source, at, rule_id, data_key)
                                      for k in found]  # fmt: skip
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(child, dict | list):
                self._into(key, child, depth + 1, data=True)

    def _ref_finding(self, rule_id: str) -> None:
        rule = rules.BY_ID[rule_id]
        at = tuple(self.parts)
        self.rejected.append(Finding(self.path(), "$ref", rule.message, rule.source, at, rule_id))

    def _local_ref(self, ref: Any, node: Mapping[str, Any]) -> None:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            return
        if "~" in ref or "%" in ref:
            return  # refused by rule ref-escaped
        target: Any = self.root
        through_array = False
        at: list[str | int] = []
        for part in ref[2:].split("/") if ref != "#" else ():
            if isinstance(target, dict) and part in target:
                target = target[part]
                at.append(part)
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
                at.append(int(part))
                through_array = True
            else:
                message = f"{ref} points to nothing"
                self.invalid.append({"path": self.path("$ref"), "keyword": "$ref",
                                     "message": message})  # fmt: skip
                return
        if through_array:
            self._ref_finding("ref-into-array")
        if target is False:
            self._ref_finding("ref-false")
        if isinstance(target, dict) and id(target) not in self._seen:
            self._targets.append((at, target))

    def _patterns(self, node: Mapping[str, Any]) -> None:
        found: list[tuple[tuple[str, ...], Any]] = [(("pattern",), node.get("pattern"))]
        if isinstance(node.get("patternProperties"), dict):
            found += [(("patternProperties", p), p) for p in node["patternProperties"]]
        for where, pattern in found:
            if isinstance(pattern, str) and not self.pattern_ok(where[0], pattern):
                message = f"{pattern!r} is not a valid regex"
                self.invalid.append({"path": self.path(*where), "keyword": where[0],
                                     "message": message})  # fmt: skip
