"""The layout tells its own story (issue 17): every module says in one line what it is for.

A reader opening any file under automations/, sandbox/ or portal/ finds a module docstring whose
first line is a whole sentence, so `head -1` over the tree reads as a table of contents.
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("automations", "sandbox", "portal")
# A sentence opens with a capital, a digit, or a code name (`Sandbox`, manage.py, policy.free_seat)...
OPENING = re.compile(r"^(?:[A-Z0-9`\"'(]|[a-z][\w-]*[._]\w)")
# ...and ends on its own line: a first line that stops mid-sentence wraps onto the next.
ENDING = re.compile(r"[.?!][)`\"']?$")


def modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts and "__pycache__" not in path.parts:
                found.append(path)
    return found


def first_line_problem(path: Path) -> str | None:
    docstring = ast.get_docstring(ast.parse(path.read_text(), filename=str(path)))
    if not docstring or not docstring.strip():
        return "no module docstring"
    first = docstring.strip().splitlines()[0].strip()
    if len(first.split()) < 4:
        return f"first line is too short to say what the module is for: {first!r}"
    if not OPENING.match(first) or not ENDING.search(first):
        return f"first line is not a sentence on its own: {first!r}"
    return None


def test_the_walk_sees_the_whole_tree():
    names = {str(path.relative_to(ROOT)) for path in modules()}
    assert {"automations/tasks.py", "sandbox/state.py", "portal/settings.py"} <= names
    assert not any("/migrations/" in name for name in names)


def test_every_module_opens_with_one_line_saying_what_it_is_for():
    problems = [f"{path.relative_to(ROOT)}: {problem}" for path in modules()
                if (problem := first_line_problem(path))]
    assert problems == [], "modules without a one-line sentence docstring:\n" + "\n".join(problems)


def test_the_check_refuses_what_it_should(tmp_path):
    cases = {
        "none.py": "import os\n",
        "empty.py": '""""""\n',
        "short.py": '"""Helpers."""\n',
        "wrapped.py": '"""Approval policy: the rules on a team\'s runbook, freeze windows,\ndelegations."""\n',
        "lower.py": '"""some things live here, and others."""\n',
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert first_line_problem(tmp_path / name), name
    (tmp_path / "good.py").write_text('"""The one guarded function that changes a request\'s status."""\n')
    assert first_line_problem(tmp_path / "good.py") is None


#
# docs/architecture.md names every module, and only modules that exist
#

ARCHITECTURE = ROOT / "docs" / "architecture.md"
APP = ROOT / "automations"
NOT_CODE = ("migrations", "templates", "static", "__pycache__")


def app_names() -> list[str]:
    """Each package (`services/`) and module (`services/content.py`) of automations, as the doc names it."""
    names = []
    for path in sorted(APP.rglob("*.py")):
        relative = path.relative_to(APP)
        if any(part in NOT_CODE for part in relative.parts) or relative == Path("__init__.py"):
            continue
        names.append(f"{relative.parent.as_posix()}/" if path.name == "__init__.py" else relative.as_posix())
    return names


def named_in(text: str, name: str) -> bool:
    # `automations/services/content.py` and `services/content.py` both count; `web/requests.py` is
    # not `services/requests.py`, and `admin/` is not `management/commands/` ... `admin`.
    return re.search(r"(?<![\w/.-])(?:automations/)?" + re.escape(name) + r"(?![\w/])"
                     if name.endswith("/") else
                     r"(?<![\w/.-])(?:automations/)?" + re.escape(name) + r"(?!\w)", text) is not None


def test_the_architecture_doc_names_every_module():
    text = ARCHITECTURE.read_text()
    missing = [name for name in app_names() if not named_in(text, name)]
    assert missing == [], "docs/architecture.md does not name: " + ", ".join(missing)


def test_the_architecture_doc_names_only_files_that_exist():
    text = ARCHITECTURE.read_text()
    packages = {path.name for path in APP.iterdir() if path.is_dir() and path.name not in NOT_CODE}
    stale = []
    for name in sorted(set(re.findall(r"`((?:[\w-]+/)*[\w-]+(?:\.py|/))`", text))):
        parts = name.removeprefix("automations/").split("/")
        if parts[0] in packages or (len(parts) == 1 and (APP / parts[0]).exists()):
            where = APP / name.removeprefix("automations/")
        else:
            where = ROOT / name  # sandbox/, portal/, manage.py, pyproject-level files
        if not where.exists():
            stale.append(name)
    assert stale == [], "docs/architecture.md names files that do not exist: " + ", ".join(stale)


def test_the_request_diagram_calls_functions_that_exist():
    diagram = re.search(r"```mermaid\n(.*?)```", ARCHITECTURE.read_text(), re.S).group(1)
    source = "\n".join(path.read_text() for path in APP.rglob("*.py") if "migrations" not in path.parts)
    called = set(re.findall(r"\b([a-z_][a-z0-9_]*)\(", diagram))
    assert called, "the diagram names no function"
    unknown = sorted(name for name in called if not re.search(rf"(?:def |\.){name}\(", source))
    assert unknown == [], "the diagram calls functions automations does not have: " + ", ".join(unknown)


def test_the_doc_checks_match_what_they_claim():
    assert named_in("see `services/content.py`", "services/content.py")
    assert named_in("in automations/audit/roles.py.", "audit/roles.py")
    assert not named_in("`web/requests.py`", "services/requests.py")
    assert not named_in("`services/requests.pyc`", "services/requests.py")
    assert named_in("`admin/` holds", "admin/") and not named_in("`web/admin/`", "admin/")
