"""Loading k8s-ee.yaml: safe YAML, line numbers, hints, and refusals of abusive documents.

Covered: every problem listed in one ConfigError with ``file:LINE: path: what``; hints (quote
numbers in env, did-you-mean for unknown keys, projectId pattern); where = the first problem;
missing/empty/non-mapping files; YAML syntax errors with lines; duplicate keys; multiple
documents; YAML 1.2 scalars (what yq did); an alias bomb, deep nesting and a 10 MB document
refused before any expansion; secrets never echoed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k8see.config import load_repo_config
from k8see.config.loading import MAX_BYTES
from k8see.errors import ConfigError


def load_error(text: str, **kw: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_repo_config(text, **kw)
    return info.value


def test_valid_file_loads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "k8s-ee.yaml"
    path.write_text("projectId: myapp\napp:\n  port: 8080\ndatabases:\n  postgresql: true\n")
    cfg = load_repo_config(path)
    assert cfg.project_id == "myapp" and cfg.app.port == 8080
    assert cfg.enabled_databases() == ["postgresql"]


def test_every_problem_is_listed_with_its_line_and_sorted() -> None:
    text = (
        "projectId: myapp\n"  # 1
        "app:\n"  # 2
        "  port: 70000\n"  # 3
        "  healthpath: /x\n"  # 4
        "env:\n"  # 5
        "  PORT: 8080\n"  # 6
        "trigger: manual\n"  # 7
    )
    error = load_error(text)
    lines = error.message.splitlines()
    # Each problem is followed by its own hint, not a list of hints apart from the problems.
    assert lines[0] == "k8s-ee.yaml has 4 problems:"
    assert lines[1].startswith("k8s-ee.yaml:3: app.port: 70000 is out of range")
    assert lines[2] == "  Hint: use a port between 1 and 65535"
    assert lines[3] == "k8s-ee.yaml:4: app.healthpath: unknown key"
    assert lines[4] == '  Hint: did you mean "healthPath"?'
    assert lines[5] == "k8s-ee.yaml:6: env.PORT: must be a string, not the number 8080"
    assert lines[6] == '  Hint: quote it: PORT: "8080"'
    assert lines[7].startswith("k8s-ee.yaml:7: trigger: ")
    assert lines[8].startswith("  Hint: use one of: 'automatic'")
    assert error.where is not None
    assert (error.where.file, error.where.field, error.where.line) == (
        "k8s-ee.yaml",
        "app.port",
        3,
    )
    assert error.hint is not None and "hint below it" in error.hint


def test_single_problem_is_one_line_with_the_file_name_given() -> None:
    error = load_error("projectId: My_App\n", filename="services/api/k8s-ee.yaml")
    assert error.message == 'services/api/k8s-ee.yaml:1: projectId: value "My_App" is not valid'
    assert error.hint is not None
    assert "^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$" in error.hint and "myapp" in error.hint


def test_boolean_in_env_gets_a_quote_hint() -> None:
    error = load_error("projectId: a\nenv:\n  DEBUG: true\n")
    assert error.message == "k8s-ee.yaml:3: env.DEBUG: must be a string, not the boolean true"
    assert error.hint == 'quote it: DEBUG: "true"'


def test_secret_looking_env_values_are_never_echoed() -> None:
    error = load_error("projectId: a\nenv:\n  JWT_SECRET: 918273645\n  API_TOKEN: 5550123\n")
    text = f"{error.message}\n{error.hint}"
    assert "918273645" not in text and "5550123" not in text
    assert "JWT_SECRET" in text


def test_env_text_is_never_echoed_even_when_misplaced() -> None:
    error = load_error('projectId: a\nenv: "DB_PASSWORD=hunter2"\n')
    assert error.message == "k8s-ee.yaml:2: env: must be a mapping of keys, not a text value"
    assert "hunter2" not in f"{error.message}{error.hint}"


def test_unknown_nested_key_suggests_the_closest_and_lists_otherwise() -> None:
    assert load_error("projectId: a\nmetrics:\n  intervall: 30s\n").hint == (
        'did you mean "interval"?'
    )
    assert load_error("projectId: a\nProjectID: b\n").hint == 'did you mean "projectId"?'
    hint = load_error("projectId: a\nimage:\n  zzz: 1\n").hint
    assert hint == "allowed keys here: context, dockerfile, repository"


def test_missing_key_points_at_its_parent() -> None:
    error = load_error("app:\n  port: 80\n")
    assert error.message == "k8s-ee.yaml:1: projectId: is missing (it is required)"
    assert error.hint == "add it, e.g. projectId: your-project-id"
    nested = load_error("projectId: a\nenvFrom:\n  - secretRef: {}\n")
    assert nested.message.startswith("k8s-ee.yaml:3: envFrom[0].secretRef.name: is missing")


def test_lines_inside_lists_and_database_objects() -> None:
    text = (
        "projectId: a\n"
        "writableDirs:\n"
        "  - /ok\n"
        "  - relative\n"
        "databases:\n"
        "  mongodb:\n"
        "    storage: 2G\n"
        "  redis: yes\n"
    )
    lines = [x for x in load_error(text).message.splitlines()[1:] if not x.startswith("  Hint")]
    assert lines[0].startswith("k8s-ee.yaml:4: writableDirs[1]: ")
    assert lines[1].startswith("k8s-ee.yaml:7: databases.mongodb.storage: ")
    assert lines[2].startswith("k8s-ee.yaml:8: databases.redis: must be true, false or a mapping")


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_repo_config(tmp_path / "k8s-ee.yaml")
    assert info.value.message == "k8s-ee.yaml was not found."
    assert info.value.hint is not None and "projectId: your-project-id" in info.value.hint
    with pytest.raises(ConfigError, match="directory"):
        load_repo_config(tmp_path)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_document_says_how_to_fill_it(text: str) -> None:
    error = load_error(text)
    assert error.message == "k8s-ee.yaml is empty."
    assert error.hint is not None and "projectId: your-project-id" in error.hint


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n", "list"), ("just text\n", "plain value"), ("42\n", "number")]
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    assert load_error(text).message == (
        f"k8s-ee.yaml:1: the top level must be a mapping of keys, not a {kind}."
    )


def test_syntax_error_has_its_line() -> None:
    error = load_error("projectId: a\napp:\n  port: 1\n   bad: [\n")
    assert error.where is not None and error.where.line in (4, 5)
    assert error.message.startswith(f"k8s-ee.yaml:{error.where.line}: not valid YAML: ")


def test_duplicate_keys_are_refused_at_the_second_one() -> None:
    error = load_error("projectId: a\napp:\n  port: 1\n  port: 2\n")
    assert error.message == ("k8s-ee.yaml:4: duplicate key 'port' (first defined on line 3).")


def test_merge_keys_may_override_without_being_duplicates() -> None:
    cfg = load_repo_config("projectId: a\napp:\n  <<: {port: 1, healthPath: /h}\n  port: 2\n")
    assert (cfg.app.port, cfg.app.health_path) == (2, "/h")


def test_multiple_documents_are_refused() -> None:
    error = load_error("projectId: a\n---\nprojectId: b\n")
    assert error.message == "k8s-ee.yaml:2: holds more than one YAML document ('---')."


def test_python_tags_are_refused() -> None:
    error = load_error("projectId: !!python/object/apply:os.system ['true']\n")
    assert error.message.startswith("k8s-ee.yaml:1: not valid YAML: could not determine")


@pytest.mark.parametrize(
    "value", ["!!int", "!!int abc", "!!float x", "!!bool maybe", "!!timestamp x"]
)
def test_explicit_tags_with_bad_values_are_refused(value: str) -> None:
    error = load_error(f"projectId: a\napp:\n  port: {value}\n")
    assert error.where is not None and error.where.line == 3
    assert "is not a valid" in error.message


def test_control_characters_are_refused_with_the_line() -> None:
    error = load_error('projectId: a\nenv:\n  A: "x\x07"\n')
    assert error.where is not None and error.where.line == 3
    assert "special characters are not allowed" in error.message


def test_yaml_1_2_scalars_like_yq() -> None:
    cfg = load_repo_config(
        "projectId: a\nenv:\n  A: on\n  B: yes\n  C: 2024-01-01\n  D: 0777x\napp:\n  port: 010\n"
    )
    assert cfg.env == {"A": "on", "B": "yes", "C": "2024-01-01", "D": "0777x"}
    assert cfg.app.port == 10
    assert load_repo_config("projectId: a\napp:\n  port: 0x50\n").app.port == 80
    assert load_repo_config("projectId: a\nmetrics:\n  enabled: True\n").metrics.enabled


def test_small_anchors_still_work() -> None:
    cfg = load_repo_config(
        "projectId: a\nresources:\n  requests: &r {cpu: 100m, memory: 64Mi}\n  limits: *r\n"
    )
    assert cfg.resources.limits.cpu == "100m"


ALIAS_BOMB = "projectId: a\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)
)


def test_alias_bomb_is_refused_before_expansion() -> None:
    # Given a billion-laughs document (10**10 values when expanded, 100 aliases in total)
    # When it is loaded, Then it is refused as an alias bomb, not expanded.
    error = load_error(ALIAS_BOMB)
    assert "alias bomb" in error.message
    assert error.where is not None and error.where.line == 1


def test_too_many_aliases_are_refused() -> None:
    text = "projectId: a\nx: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n"
    assert "more than 100 aliases" in load_error(text).message


def test_recursive_alias_is_refused() -> None:
    assert "refers to its own anchor" in load_error("projectId: a\nx: &x [*x]\n").message


def test_deep_nesting_is_refused() -> None:
    assert "nested deeper than 64" in load_error("x: " + "[" * 200 + "]" * 200 + "\n").message


def test_ten_megabyte_document_is_refused_unread(tmp_path: Path) -> None:
    big = "projectId: a\nenv:\n" + "".join(f'  K{i}: "{"v" * 90}"\n' for i in range(110_000))
    assert len(big) > 10_000_000
    error = load_error(big)
    assert error.message == "k8s-ee.yaml is larger than 256 KiB and was not read."
    path = tmp_path / "k8s-ee.yaml"
    path.write_text(big)
    with pytest.raises(ConfigError, match="larger than 256 KiB"):
        load_repo_config(path)


def test_limit_is_256_kib_exactly() -> None:
    assert MAX_BYTES == 256 * 1024
    fits = "projectId: a\n" + "#" * (MAX_BYTES - len("projectId: a\n"))
    assert load_repo_config(fits).project_id == "a"
    with pytest.raises(ConfigError, match="larger than"):
        load_repo_config(fits + "#")


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k8s-ee.yaml"
    path.write_bytes(b"projectId: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_repo_config(path)


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "k8s-ee.yaml"
    path.write_bytes("\ufeffprojectId: a\n".encode())
    assert load_repo_config(path).project_id == "a"


@pytest.mark.parametrize(
    ("text", "line", "first"),
    [
        ("projectId: a\napp: {port: 3000, port: 4000}\n", 2, "earlier on the same line"),
        ("projectId: a\ndatabases:\n  redis: {config: {maxmemory: 1mb, maxmemory: 2mb}}\n", 3,
         "earlier on the same line"),
        ("projectId: a\nenv: {A: '1',\n  A: '2'}\n", 3, "on line 2"),
        ("projectId: a\nwritableDirs: []\nprojectId: b\n", 3, "on line 1"),
    ],
)  # fmt: skip
def test_a_key_given_twice_is_refused_wherever_it_is(text: str, line: int, first: str) -> None:
    # Given the same key twice in one mapping, flow or block, on one line or two
    # When it is loaded
    error = load_error(text)
    # Then it is refused at the second one, naming the key, the line and where the first is
    assert error.where is not None and error.where.line == line
    assert "duplicate key" in error.message and f"(first defined {first})" in error.message
    assert error.hint is not None and "Keep one" in error.hint


@pytest.mark.parametrize(
    "number", ["0x" + "f" * 3700, "9" * 5000, "-" + "1" * 30, "0o" + "7" * 100]
)
def test_a_huge_number_is_refused_with_its_line(number: str) -> None:
    error = load_error(f"projectId: a\napp:\n  port: {number}\n")
    assert error.where is not None and error.where.line == 3
    assert "is too large" in error.message and len(error.message) < 200
    assert error.hint is not None and "port: 3000" in error.hint


def test_a_number_that_fits_64_bits_still_loads_where_any_value_is_kept() -> None:
    text = "projectId: a\ndatabases:\n  redis: {config: {maxmemory: 18446744073709551615}}\n"
    redis = load_repo_config(text).to_dict()["databases"]["redis"]
    assert redis["config"]["maxmemory"] == 2**64 - 1
