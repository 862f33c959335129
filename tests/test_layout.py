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
