"""Declarative rules, Python label functions from the workspace, and rule statistics."""

from __future__ import annotations

import http.server
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.scoring.rules import (
    RuleError,
    RuleResult,
    apply_rules,
    bind_rules,
    dump_rules,
    load_rules,
    parse_rules,
    rule_stats,
)
from tests.loopback import loopback_server


def one(rule: dict, text: str) -> RuleResult:
    (result,) = apply_rules(parse_rules([rule]), text)
    return result


# --------------------------------------------------------------------------- each rule kind
def test_regex_must_match_and_must_not_match() -> None:
    must = {"kind": "regex_must_match", "name": "has_id", "pattern": r"ORD-\d{4}"}
    assert one(must, "order ORD-1234 is late").passed
    miss = one(must, "no order here")
    assert not miss.passed and miss.rule == "has_id" and "does not match" in miss.reason

    must_not = {"kind": "regex_must_not_match", "name": "no_email", "pattern": r"\S+@\S+"}
    assert one(must_not, "call us").passed
    hit = one(must_not, "mail bob@example.com now")
    assert not hit.passed and "bob@example.com" in hit.reason

    case = {"kind": "regex_must_match", "name": "yes", "pattern": "^yes$", "ignore_case": True}
    assert one(case, "YES").passed
    assert not one({**case, "ignore_case": False}, "YES").passed


def test_keywords_forbidden_is_case_insensitive_and_whole_word() -> None:
    rule = {"kind": "keywords_forbidden", "name": "competitors", "keywords": ["Acme", "Globex Corp"]}
    assert not one(rule, "Try ACME's product").passed
    assert not one(rule, "globex\n  corp is cheaper").passed  # any whitespace inside a keyword
    assert one(rule, "Acmeville and subacme are places").passed  # not a whole word
    assert one(rule, "Globex alone is fine").passed
    assert "acme" in one(rule, "acme!").reason.lower()


def test_forbidden_phrases_are_substrings_ignoring_case_and_spacing() -> None:
    rule = {"kind": "forbidden_phrases", "name": "ai", "phrases": ["as an AI language model"]}
    assert not one(rule, "Well,  As an ai\nlanguage model, I cannot").passed
    assert one(rule, "as an AI, I think").passed
    sensitive = {**rule, "case_sensitive": True}
    assert one(sensitive, "as an ai language model").passed


def test_length_bounds_in_chars_and_tokens() -> None:
    chars = {"kind": "length_bounds", "name": "len", "min": 3, "max": 10}
    assert one(chars, "abcdef").passed
    assert "too short: 2 chars < min 3" in one(chars, "ab").reason
    assert "too long: 11 chars > max 10" in one(chars, "a" * 11).reason
    tokens = {"kind": "length_bounds", "name": "words", "max": 3, "unit": "tokens"}
    assert one(tokens, "one  two\nthree").passed
    assert not one(tokens, "one two three four").passed
    with pytest.raises(RuleError, match="give min, max or both"):
        parse_rules([{"kind": "length_bounds", "name": "empty"}])
    with pytest.raises(RuleError, match="min 5 is larger than max 2"):
        parse_rules([{"kind": "length_bounds", "name": "bad", "min": 5, "max": 2}])


def test_json_schema_validity() -> None:
    schema = {
        "type": "object",
        "properties": {"urgency": {"enum": ["low", "high"]}, "n": {"type": "integer"}},
        "required": ["urgency"],
    }
    rule = {"kind": "json_schema", "name": "shape", "schema": schema}
    assert one(rule, ' {"urgency": "low", "n": 2} ').passed
    assert "not valid JSON" in one(rule, "Sure! {}").reason
    bad = one(rule, '{"urgency": "soon"}')
    assert not bad.passed and "$.urgency" in bad.reason
    assert "'urgency' is a required property" in one(rule, "{}").reason
    with pytest.raises(RuleError, match=r"rule 1 'broken' \(json_schema\): schema: invalid JSON Schema"):
        parse_rules([{"kind": "json_schema", "name": "broken", "schema": {"type": 12}}])


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def schema_server() -> Iterator[str]:
    with loopback_server(_CountingHandler) as url:
        yield url + "/schema.json"


def test_json_schema_never_fetches_a_remote_ref(schema_server: str) -> None:
    rule = {"kind": "json_schema", "name": "remote", "schema": {"$ref": schema_server}}
    result = one(rule, '"text"')
    assert not result.passed and "unresolvable" in result.reason
    assert _CountingHandler.hits == 0


def test_required_fields_with_nesting_and_empty_values() -> None:
    rule = {"kind": "required_fields", "name": "fields", "fields": ["intent", "customer.name"]}
    assert one(rule, '{"intent": "refund", "customer": {"name": "Ann"}}').passed
    missing = one(rule, '{"customer": {}}')
    assert missing.reason == "missing intent, customer.name"
    empty = one(rule, '{"intent": "", "customer": {"name": null}}')
    assert empty.reason == "empty intent, customer.name"
    assert one({**rule, "allow_empty": True}, '{"intent": "", "customer": {"name": null}}').passed
    assert one(rule, "[1, 2]").reason == "not a JSON object"


# --------------------------------------------------------------------------- regex safety
def test_invalid_or_oversized_pattern_names_the_rule_and_field() -> None:
    with pytest.raises(RuleError) as err:
        parse_rules([{"kind": "regex_must_not_match", "name": "ids", "pattern": "ORD-(\\d+"}])
    assert str(err.value).startswith(
        "rules: rule 1 'ids' (regex_must_not_match): pattern: invalid regular expression"
    )
    with pytest.raises(RuleError, match="the limit is 1000"):
        parse_rules([{"kind": "regex_must_match", "name": "huge", "pattern": "a" * 1001}])


def test_catastrophic_backtracking_times_out_and_rejects() -> None:
    rule = {"kind": "regex_must_not_match", "name": "redos", "pattern": "(a|aa)+$"}
    result = one(rule, "a" * 60 + "!")  # unbounded, this would run for centuries
    assert not result.passed and "timed out" in result.reason


# --------------------------------------------------------------------------- loading
RULES_YAML = """
- {kind: keywords_forbidden, name: competitors, keywords: [Acme]}
- kind: length_bounds
  name: short
  max: 20
"""


def test_load_from_yaml_json_and_file_round_trips(tmp_path: Path) -> None:
    rules = load_rules(RULES_YAML)
    assert [r.kind for r in rules] == ["keywords_forbidden", "length_bounds"]
    as_json = json.dumps({"rules": [r.model_dump(by_alias=True) for r in rules]})
    assert load_rules(as_json) == rules
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(rules))
    assert load_rules(path) == rules == load_rules(str(path))
    assert dump_rules(rules).startswith("- kind: keywords_forbidden")


def test_refused_specs_say_why() -> None:
    with pytest.raises(RuleError, match="Extra inputs are not permitted"):
        parse_rules([{"kind": "length_bounds", "name": "x", "max": 3, "maxx": 4}])
    with pytest.raises(RuleError, match="does not match any of the expected tags"):
        parse_rules([{"kind": "vibes", "name": "x"}])
    with pytest.raises(RuleError, match="repeated: twice"):
        load_rules("[{kind: length_bounds, name: twice, max: 1}, {kind: length_bounds, name: twice, max: 2}]")
    with pytest.raises(RuleError, match="invalid YAML"):
        load_rules("- {kind: [")
    with pytest.raises(RuleError, match="non-blank"):
        parse_rules([{"kind": "keywords_forbidden", "name": "k", "keywords": ["ok", "  "]}])


# --------------------------------------------------------------------------- code is never run
def test_rules_typed_in_the_browser_cannot_execute_python(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    # Whatever a user types into a rule form lands in a data field and is matched as text.
    rules = parse_rules(
        [
            {"kind": "keywords_forbidden", "name": "kw", "keywords": [code]},
            {"kind": "forbidden_phrases", "name": "ph", "phrases": [code]},
            {"kind": "regex_must_not_match", "name": "re", "pattern": code},
            {"kind": "required_fields", "name": "rf", "fields": [code]},
            {"kind": "json_schema", "name": "js", "schema": {"title": code, "type": "object"}},
            {"kind": "length_bounds", "name": "lb", "max": 10_000, "description": code},
        ]
    )
    results = apply_rules(rules, f"the text {code} as plain words")
    assert not marker.exists()
    by_name = {r.rule: r for r in results}
    assert not by_name["kw"].passed and not by_name["ph"].passed  # the literal text matched
    assert by_name["lb"].passed
    assert rule_stats(rules, [code, "x"]) and not marker.exists()

    # A "python" rule can only *name* a function from <workspace>/rules/*.py: no code field,
    # and the name must be an identifier.
    with pytest.raises(RuleError, match="Extra inputs are not permitted"):
        parse_rules([{"kind": "python", "name": "p", "function": "f", "code": code}])
    with pytest.raises(RuleError, match="String should match pattern"):
        parse_rules([{"kind": "python", "name": "p", "function": code}])
    # YAML tags that construct Python objects are refused by the safe loader.
    for tagged in (
        f"- !!python/object/apply:os.system ['touch {marker}']",
        f"[{{kind: length_bounds, name: x, max: !!python/object/apply:os.system ['touch {marker}']}}]",
    ):
        with pytest.raises(RuleError, match="invalid YAML"):
            load_rules(tagged)
    assert not marker.exists()


# --------------------------------------------------------------------------- Python label functions
LABEL_FILE = '''
from engine.scoring.label_functions import label_function

@label_function("no_refunds")
def no_refunds(text):
    """Never promise a refund."""
    return ("refund" not in text, "promises a refund")

@label_function("json_first", description="Answers start with a brace")
def json_first(text):
    return "accept" if text.startswith("{") else None

@label_function("crashes")
def crashes(text):
    raise RuntimeError("boom")

def helper(text):  # not registered: ignored
    return False
'''


def write_rules_file(workspace: Path, name: str, text: str) -> Path:
    folder = workspace / "rules"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_python_label_functions_load_only_from_the_rules_folder(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_rules_file(workspace, "support.py", LABEL_FILE)
    marker = tmp_path / "outside_ran"
    (workspace / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")  # not in rules/

    spec = """
    - {kind: python, name: refunds, function: no_refunds}
    - {kind: python, name: brace, function: json_first}
    - {kind: python, name: broken, function: crashes}
    """
    unbound = load_rules(spec)
    with pytest.raises(RuleError, match="not bound"):
        apply_rules(unbound, "x")
    rules = load_rules(spec, workspace=workspace)
    assert not marker.exists()

    refund, brace, broken = apply_rules(rules, "We will refund you")
    assert (refund.rule, refund.passed, refund.reason) == ("refunds", False, "promises a refund")
    assert (
        brace.vote == "pass" and broken.vote == "reject" and broken.reason.startswith("error: RuntimeError")
    )
    assert apply_rules(rules, "{}")[1].vote == "accept"
    with pytest.raises(RuleError, match="no label function 'helper'"):
        bind_rules(parse_rules([{"kind": "python", "name": "h", "function": "helper"}]), workspace)


def test_rules_folder_symlink_escape_and_import_errors_are_refused(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside.py"
    outside.write_text(LABEL_FILE)
    (workspace / "rules").mkdir(parents=True)
    os.symlink(outside, workspace / "rules" / "link.py")
    rule = parse_rules([{"kind": "python", "name": "r", "function": "no_refunds"}])
    with pytest.raises(RuleError, match="outside"):
        bind_rules(rule, workspace)
    (workspace / "rules" / "link.py").unlink()
    write_rules_file(workspace, "bad.py", "import not_a_module_anywhere\n")
    with pytest.raises(RuleError, match=r"bad\.py: failed to import: ModuleNotFoundError"):
        bind_rules(rule, workspace)


# --------------------------------------------------------------------------- statistics
def test_rule_stats_coverage_overlap_conflict_by_hand(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    write_rules_file(
        workspace,
        "votes.py",
        "from engine.scoring.label_functions import label_function\n"
        "@label_function('likes_x')\n"
        "def likes_x(text):\n"
        "    return 'accept' if 'x' in text else None\n",
    )
    rules = load_rules(
        """
        - {kind: forbidden_phrases, name: no_a, phrases: [a]}
        - {kind: forbidden_phrases, name: no_b, phrases: [b]}
        - {kind: python, name: x_good, function: likes_x}
        """,
        workspace=workspace,
    )
    texts = ["a", "ab", "b", "x", "ax", "-"]
    # votes      a    ab   b    x    ax   -
    # no_a       R    R    .    .    R    .    coverage 3/6, overlap {ab, ax} 2/6, conflict {ax} 1/6
    # no_b       .    R    R    .    .    .    coverage 2/6, overlap {ab} 1/6, conflict 0
    # x_good     .    .    .    A    A    .    coverage 2/6, overlap {ax} 1/6, conflict {ax} 1/6
    stats = {s.rule: s for s in rule_stats(rules, texts)}
    a, b, x = stats["no_a"], stats["no_b"], stats["x_good"]
    assert (a.coverage, a.reject_rate, a.overlap, a.conflict) == (3 / 6, 3 / 6, 2 / 6, 1 / 6)
    assert (b.coverage, b.overlap, b.conflict) == (2 / 6, 1 / 6, 0.0)
    assert (x.coverage, x.accept_rate, x.reject_rate, x.overlap, x.conflict) == (
        2 / 6,
        2 / 6,
        0,
        1 / 6,
        1 / 6,
    )
    assert a.overlap_with == {"no_b": 1 / 6, "x_good": 1 / 6}
    assert a.conflict_with == {"no_b": 0.0, "x_good": 1 / 6}
    assert all(s.n == 6 and s.errors == 0 for s in stats.values())
    assert rule_stats(rules, [])[0].coverage == 0.0


BAD_RULES = Path(__file__).parent / "data" / "bad_rules"  # bad/ holds import inputs only


def test_a_schema_pattern_runs_on_the_guarded_regex_engine() -> None:
    (rule,) = load_rules(BAD_RULES / "schema_redos.yaml")
    evil = json.dumps({"intent": "a" * 40 + "!"})
    result = rule.check(evil)  # with jsonschema's own `re` this does not return for hours
    assert not result.passed and ("timed out" in result.reason or "does not match" in result.reason)
    assert rule.check(json.dumps({"intent": "aaa"})).passed
    assert not rule.check(json.dumps({"intent": "b"})).passed


def test_a_schema_that_recurses_without_end_is_refused_with_its_name() -> None:
    with pytest.raises(RuleError, match=r"'loop'.*refers back to itself"):
        load_rules(BAD_RULES / "schema_recursive_ref.yaml")
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["not"] = {}
        node = node["not"]
    with pytest.raises(RuleError, match="nested deeper than 32 levels"):
        parse_rules([{"kind": "json_schema", "name": "deep", "schema": deep}])
