"""GitHub path-filter semantics (nerops.triggers.paths), table-tested with GitHub's documented examples.

Every row of the "Patterns to match file paths" table of GitHub's filter pattern cheat sheet is here, with its
example matches as documented, plus paths it must not match (the ones that catch the usual glob bugs):
https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-syntax#filter-pattern-cheat-sheet
(also at https://docs.github.com/en/actions/using-workflows/workflow-syntax-for-github-actions#filter-pattern-cheat-sheet)
"""

from __future__ import annotations

import pytest

from nerops.triggers.paths import TRAINING_PATHS, included, matches, touched

# (pattern, documented example matches, paths that must not match)
CHEAT_SHEET_PATHS: list[tuple[str, list[str], list[str]]] = [
    ("*", ["README.md", "server.rb"], ["docs/README.md", "a/b", ".github/workflows/test.yml"]),
    ("*.jsx?", ["page.js", "page.jsx"], ["page.jsxx", "page.j", "src/page.js", "page.ts"]),
    ("**", ["all/the/files.md"], []),
    ("*.js", ["app.js", "index.js"], ["js/index.js", "src/js/app.js", "app.jsx", "app.ts"]),
    ("**.js", ["index.js", "js/index.js", "src/js/app.js"], ["index.jsx", "js/index.ts", "js.md"]),
    ("docs/*", ["docs/README.md", "docs/file.txt"], ["docs/a/b.md", "docs/mona/octocat.txt", "README.md", "docs"]),
    ("docs/**", ["docs/README.md", "docs/mona/octocat.txt"], ["README.md", "my-docs/README.md", "a/docs/x.md"]),
    (
        "docs/**/*.md",
        ["docs/README.md", "docs/mona/hello-world.md", "docs/a/markdown/file.md"],
        ["README.md", "docs/file.txt", "docs/a/file.mdx", "a/docs/README.md", "docsREADME.md"],
    ),
    (
        "**/docs/**",
        ["docs/hello.md", "dir/docs/my-file.txt", "space/docs/plan/space.doc"],
        ["hello.md", "mydocs/hello.md", "dir/docs-old/file.txt", "documents/a.md"],
    ),
    ("**/README.md", ["README.md", "js/README.md"], ["README.mdx", "js/MY-README.md", "js/README.txt"]),
    (
        "**/*src/**",
        ["a/src/app.js", "my-src/code/js/app.js"],
        ["source/app.js", "a/src", "src-old/app.js", "a/srcs/app.js"],
    ),
    ("**/*-post.md", ["my-post.md", "path/their-post.md"], ["my-post.mdx", "post.md", "path/their-post.txt"]),
    (
        "**/migrate-*.sql",
        ["migrate-10909.sql", "db/migrate-v1.0.sql", "db/sept/migrate-v1.sql"],
        ["db/migrate-v1/x.sql", "db/migrate.sql", "db/premigrate-v1.sql", "db/migrate-v1.sql.bak"],
    ),
]


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"), CHEAT_SHEET_PATHS, ids=[r[0] for r in CHEAT_SHEET_PATHS]
)
def test_cheat_sheet_file_path_patterns(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    for path in matching:
        assert matches(pattern, path), f"{pattern!r} should match {path!r}"
        assert included([pattern], path)
    for path in not_matching:
        assert not matches(pattern, path), f"{pattern!r} should not match {path!r}"
        assert not included([pattern], path)


# The negation rows of the same table: "*.md", "!README.md", and the same followed by "README*".
def test_negation_excludes_what_an_earlier_pattern_included() -> None:
    patterns = ["*.md", "!README.md"]
    assert included(patterns, "hello.md")
    assert not included(patterns, "README.md")  # documented: does not match
    assert not included(patterns, "docs/hello.md")  # documented: does not match ('*' stops at '/')


def test_later_pattern_reincludes_a_negated_path() -> None:
    patterns = ["*.md", "!README.md", "README*"]
    for path in ("hello.md", "README.md", "README.doc"):
        assert included(patterns, path), path
    assert not included(patterns, "docs/hello.md")
    assert not included(patterns, "docs/README.md")


def test_order_decides() -> None:
    assert not included(["docs/**", "!docs/**/*.md"], "docs/a/README.md")
    assert included(["!docs/**/*.md", "docs/**"], "docs/a/README.md")  # the negation came first: nothing to exclude
    assert not included(["!README.md"], "README.md")  # a negation alone includes nothing
    assert not included(["!README.md"], "hello.md")
    assert not included([], "README.md")


# The cheat sheet's special characters, with its own examples where it gives them.
@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("Octo*", "Octocat", True),  # '*' documented example
        ("Octo*", "Octo/cat", False),
        ("Octo*", "Octo", True),
        ("[CB]at", "Cat", True),  # '[]' documented examples
        ("[CB]at", "Bat", True),
        ("[CB]at", "Hat", False),
        ("[CB]at", "CBat", False),
        ("[1-2]00", "100", True),
        ("[1-2]00", "200", True),
        ("[1-2]00", "300", False),
        ("[0-9a-z]", "7", True),
        ("[0-9a-z]", "q", True),
        ("[0-9a-z]", "Q", False),
        ("[0-9a-z]", "-", False),
        ("v[12].[0-9]+.[0-9]+", "v1.10.1", True),  # the semver example of the branches table
        ("v[12].[0-9]+.[0-9]+", "v2.0.0", True),
        ("v[12].[0-9]+.[0-9]+", "v3.0.0", False),
        ("v[12].[0-9]+.[0-9]+", "v1x10.1", False),  # '.' is literal
        ("v[12].[0-9]+.[0-9]+", "v1..1", False),  # '+' is one or more
        ("ab+c", "ac", False),
        ("ab+c", "abc", True),
        ("ab+c", "abbbc", True),
        ("ab?c", "ac", True),
        ("ab?c", "abc", True),
        ("ab?c", "abbc", False),
        ("a!b", "a!b", True),  # '!' is special only first
        ("a.c", "abc", False),  # regex characters are literal
        ("(a|b)", "(a|b)", True),
        ("(a|b)", "a", False),
        ("a\\*b", "a*b", True),  # '\' escapes
        ("a\\*b", "axb", False),
        ("README.md", "readme.md", False),  # case-sensitive
        ("src/*.py", "src/a.py", True),
        ("src/*.py", "src/a/b.py", False),
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/a/b/c.py", True),
        ("**/*.py", "a.py", True),
        ("**/*.py", "a/b.py", True),
        ("*.py", "a/b.py", False),
        ("**", "a", True),
    ],
)
def test_special_characters(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


def test_wildcards_do_not_backtrack_for_ever() -> None:
    assert not matches("*+*+*+*+*+*+x", "a" * 5000)
    assert not matches("**/**/**/**/**/**/x", "a/" * 2000 + "y")


@pytest.mark.parametrize("pattern", ["[]", "[a-", "a[bc", "[a-9]", "[z-a]", "a\\", "ab++", "a[/]"])
def test_invalid_patterns_raise(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid pattern"):
        matches(pattern, "anything")


def test_touched_keeps_the_included_files_in_order() -> None:
    files = ["README.md", "docs/a.md", "hello.md", "notes.txt", "README.doc"]
    assert touched(["*.md", "!README.md", "README*"], files) == ["README.md", "hello.md", "README.doc"]
    assert touched(["*.md", "!README.md", "README*"], iter(files)) == ["README.md", "hello.md", "README.doc"]
    assert touched(["docs/**"], []) == []


# What shapes a trained model retrains it; documentation, serving and the fault injector do not.
@pytest.mark.parametrize(
    "path",
    [
        "src/nerops/model/config.py",
        "src/nerops/model/pipeline.py",
        "src/nerops/model/features.py",
        "src/nerops/model/components.py",
        "src/nerops/model/tokenizer.py",
        "src/nerops/model/personal.py",
        "src/nerops/model/__init__.py",
        "src/nerops/data.py",
        "src/nerops/dataset.py",
        "flows/retrain_model.py",
        "tasks/training.py",
        "constraints.txt",
    ],
)
def test_training_paths_include(path: str) -> None:
    assert included(TRAINING_PATHS, path)


@pytest.mark.parametrize(
    "path",
    [
        "README.md",
        "src/nerops/serving/endpoint.py",
        "src/nerops/model/faults.py",
        "src/nerops/rollout/machine.py",
        "flows/progressive_rollout.py",
        "tasks/rollout.py",
        "tests/test_model.py",
        "docs/architecture.md",
        ".github/workflows/train.yml",
        "src/nerops/model.py",
        "src/nerops/data.pyc",
        "sub/constraints.txt",
    ],
)
def test_training_paths_exclude(path: str) -> None:
    assert not included(TRAINING_PATHS, path)


def test_training_paths_are_valid_patterns() -> None:
    assert TRAINING_PATHS and not TRAINING_PATHS[0].startswith("!")  # a list that starts negated includes nothing
    for pattern in TRAINING_PATHS:
        matches(pattern.removeprefix("!"), "x")  # raises on an invalid pattern
    assert touched(TRAINING_PATHS, ["README.md", "src/nerops/model/config.py", "src/nerops/model/faults.py"]) == [
        "src/nerops/model/config.py"
    ]
