"""Mutation testing of the decision and integrity code: mutmut's mutants, one warm pytest session.

    .venv/bin/python bench/mutation.py policy          # or: python3 dev.py mutation policy
    .venv/bin/python bench/mutation.py audit | transitions | dispatch
    .venv/bin/python bench/mutation.py dispatch --only 'automations.services.dispatch.x__claim*'
    .venv/bin/python bench/mutation.py policy --sample 150   # a seeded uniform sample (the same every run)
    .venv/bin/python bench/mutation.py policy --rerun   # measure again, ignoring stored results
    .venv/bin/python bench/mutation.py policy --sample 150 --rerun-survivors   # after new tests
    .venv/bin/mutmut results ; .venv/bin/mutmut show NAME   # survivors, and one mutant's diff

mutmut 3 writes the mutants (every mutant of a function compiled in beside the original, chosen at
run time by MUTANT_UNDER_TEST) into mutants/, a git-ignored copy of the tree, configured by
[tool.mutmut] in pyproject.toml. Its own runner starts pytest once per mutant, and in Delegate that
means building the SQLite test schema and seeding the sandbox's world every time (about 6 s before
the first test, 40 s a mutant on a busy machine). This runner starts pytest once, in mutants/:

1. the parent sets up what every test shares and nothing else: it runs one database-only test
   (the test database is built), copies the database file, and seeds the sandbox's moto world once;
2. a forked child runs the module's tests with mutmut's "stats" mutant and records which tests
   call which mutated function, and how long each takes (every test must pass, on the original code);
3. per mutant, a forked child gets its own copy of the database file and runs only the tests that
   call the mutated function, fastest first, stopping at the first failure. A child that runs past
   its bound (15 s + 4 x those tests' clean time) is killed: a timeout, which counts as killed.

Results go where mutmut keeps them (mutants/**/*.meta), so `mutmut results` and `mutmut show` work;
a run that is stopped keeps what it measured and the next run goes on from there (--rerun measures
again). SQLite only (DATABASE_URL is ignored): PostgreSQL-only code shows as "no tests".
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Which source files each module name mutates, and the fastest tests that cover them.
MODULES = {
    "policy": (["automations/policy/rules.py", "automations/policy/batch.py"],
               ["tests/policy"]),
    "audit": (["automations/audit/chain.py"],
              ["tests/audit", "tests/services/test_dispatch_refusals.py::TestChainRanges"]),
    "transitions": (["automations/services/transitions.py"],
                    ["tests/services/test_transitions.py", "tests/services/test_dispatch_refusals.py"]),
    "dispatch": (["automations/services/dispatch.py"],
                 ["tests/services/test_dispatch.py", "tests/services/test_dispatch_refusals.py",
                  "tests/services/test_trust.py", "tests/services/test_overlap.py",
                  "tests/policy/test_policy.py::TestFreeze"]),
}
# A database-only test the parent runs once so the test database exists before any fork.
WARM_UP = "tests/policy/test_policy.py::TestScopeAtSubmit::test_policy_fields_are_validated_for_admins"
# mutmut's exit codes (mutmut/stats.py): what `mutmut results` shows for each.
KILLED, SURVIVED, NO_TESTS, TIMEOUT = 1, 0, 33, 36
SECONDS_PER_MUTANT_FLOOR, TIMEOUT_FACTOR = 15.0, 4.0
SAMPLE_SEED = 16  # issue 16


def generate_mutants() -> None:
    """mutmut's own generation step (`mutmut run` does the same before running): idempotent."""
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()  # tests/ and pyproject.toml again, so new tests are measured
    create_mutants(1)
    set_mutant_under_test(None)
    os.environ.pop("MUTANT_UNDER_TEST", None)


@contextlib.contextmanager
def _in_root():
    """mutmut's result files are named from the project root (mutants/...); the tests run in mutants/."""
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(here)


def _has(item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


def _skipped(item) -> bool:
    return item.get_closest_marker("skip") is not None


class MutationPlugin:
    """Replaces pytest's run loop: setup once in this process, a fork per mutant (module docstring)."""

    def __init__(self, sources: list[str], selection: list[str], *, only: str | None = None, sample: int | None = None,
                 rerun: bool = False, rerun_survivors: bool = False, verbose: bool = False):
        self.sources, self.selection, self.only, self.sample = sources, selection, only, sample
        self.rerun, self.rerun_survivors, self.verbose = rerun, rerun_survivors, verbose

    # -- processes ---------------------------------------------------------------------------------

    def _fork(self, work, timeout: float | None) -> tuple[int, float]:
        """Run work() in a child with its own database copy; (exit code, seconds). Killed: TIMEOUT."""
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                self._enter_child()
                code = work()
            except BaseException:  # noqa: BLE001 - a crash of the child is a kill, said as such
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        deadline = started + timeout if timeout else None
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return (os.waitstatus_to_exitcode(status), time.monotonic() - started)
                if deadline and time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return TIMEOUT, time.monotonic() - started
                time.sleep(0.02)
        finally:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.db_path}.{pid}{suffix}")

    def _enter_child(self) -> None:
        from django.conf import settings
        from django.db import connections

        child_db = f"{self.db_path}.{os.getpid()}"
        shutil.copyfile(self.pristine_db, child_db)
        connections["default"].settings_dict["NAME"] = child_db
        settings.DATABASES["default"]["NAME"] = child_db
        if not self.verbose:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)

    def _run_items(self, items, *, on_each=None, stop_at_failure=True) -> int:
        from _pytest.runner import runtestprotocol

        failed = False
        for index, item in enumerate(items):
            nextitem = items[index + 1] if index + 1 < len(items) else None
            began = time.monotonic()
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            item_failed = any(report.failed for report in reports)
            if on_each:
                on_each(item, item_failed, time.monotonic() - began)
            if item_failed:
                failed = True
                if self.verbose:
                    for report in reports:
                        if report.failed:
                            print(report.longreprtext, file=sys.stderr)
                if stop_at_failure:
                    return KILLED
        return KILLED if failed else SURVIVED

    # -- the run -----------------------------------------------------------------------------------

    def pytest_runtestloop(self, session):
        import django.db
        from django.db import connections

        unique = {item.nodeid: item for item in reversed(session.items)}  # WARM_UP may be listed twice
        items = [item for item in session.items if not _skipped(item) and unique[item.nodeid] is item]
        in_selection = [item for item in items
                        if any(item.nodeid == path or item.nodeid.startswith((f"{path}::", f"{path.rstrip('/')}/"))
                               for path in self.selection)]
        warm_up = next((item for item in items if _has(item, "django_db_setup") and not _has(item, "sandbox")), None)
        if warm_up is None:
            raise SystemExit("mutation: no database-only test to build the test database with")
        # 1. The test database, built once (warm_up's function fixtures are torn down, the session's stay).
        from _pytest.runner import runtestprotocol

        other = next(item for item in items if item is not warm_up)
        if any(report.failed for report in runtestprotocol(warm_up, nextitem=other, log=False)):
            raise SystemExit(f"mutation: the warm-up test {warm_up.nodeid} failed on the original code")
        from pytest_django.plugin import blocking_manager_key

        with session.config.stash[blocking_manager_key].unblock(), connections["default"].cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        django.db.connections.close_all()
        self.db_path = connections["default"].settings_dict["NAME"]
        self.pristine_db = f"{self.db_path}.pristine"
        shutil.copyfile(self.db_path, self.pristine_db)
        # The sandbox's moto world, seeded once: a child's own Sandbox reuses a pristine world.
        if any(_has(item, "sandbox") for item in in_selection):
            from sandbox import Sandbox

            Sandbox(port=0, time_scale=50.0).start().stop()

        # 2. Which tests call which mutated function (mutmut's "stats" mutant), on the original code.
        stats_file = Path(f"{self.db_path}.stats.json")

        def collect_stats():
            from mutmut.mutation.trampoline import set_mutant_under_test
            from mutmut.state import state

            set_mutant_under_test("stats")
            found = {}

            def on_each(item, failed, seconds):
                found[item.nodeid] = {"failed": failed, "seconds": seconds, "hits": sorted(state()._stats)}
                state()._stats.clear()

            state()._stats.clear()
            self._run_items(in_selection, on_each=on_each, stop_at_failure=False)
            stats_file.write_text(json.dumps(found))
            return 0

        began = time.monotonic()
        code, _ = self._fork(collect_stats, timeout=None)
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
        broken = [nodeid for nodeid, row in stats.items() if row["failed"]]
        if code != 0 or broken or not stats:
            raise SystemExit(f"mutation: the clean run failed (exit {code}); failing tests: {broken}")
        print(f"\nmutation: clean run of {len(stats)} tests in {time.monotonic() - began:.0f} s", flush=True)
        by_id = {item.nodeid: item for item in in_selection}

        # 3. One child per mutant.
        from mutmut.mutation.data import SourceFileMutationData
        from mutmut.mutation.trampoline import set_mutant_under_test
        from mutmut.utils.format_utils import mangled_name_from_mutant_name

        datas = {}
        for source in self.sources:
            datas[source] = SourceFileMutationData(path=Path(source))
            with _in_root():
                datas[source].load()
        names = [(source, name) for source in self.sources for name in sorted(datas[source].exit_code_by_key)]
        total = len(names)
        if self.only:
            names = [(source, name) for source, name in names if fnmatch.fnmatch(name, self.only)]
        if self.sample and self.sample < len(names):
            # A uniform sample, the same every run (seeded), measured in its random order: a run stopped
            # half way has measured a uniform sample too.
            names = random.Random(SAMPLE_SEED).sample(names, self.sample)
        print(f"mutation: measuring {len(names)} of {total} mutants"
              + (f" (a seeded sample of {self.sample})" if self.sample else ""), flush=True)

        counts = {"killed": 0, "survived": 0, "timeout": 0, "no tests": 0}
        survivors: list[str] = []
        run_started = time.monotonic()
        for number, (source, name) in enumerate(names, 1):
            data = datas[source]
            function = mangled_name_from_mutant_name(name)
            stored = data.exit_code_by_key.get(name)
            if stored is None or self.rerun or (self.rerun_survivors and stored in (SURVIVED, NO_TESTS)):
                tests = sorted((nodeid for nodeid, row in stats.items() if function in row["hits"]),
                               key=lambda nodeid: stats[nodeid]["seconds"])
                if not tests:
                    code, seconds = NO_TESTS, 0.0
                else:
                    clean = sum(stats[nodeid]["seconds"] for nodeid in tests)

                    def run_mutant(name=name, tests=tests):
                        set_mutant_under_test(name)
                        return self._run_items([by_id[nodeid] for nodeid in tests])

                    code, seconds = self._fork(run_mutant, timeout=SECONDS_PER_MUTANT_FLOOR + TIMEOUT_FACTOR * clean)
                data.exit_code_by_key[name] = code
                data.durations_by_key[name] = seconds
                with _in_root():
                    data.save()
            code = data.exit_code_by_key[name]
            status = {KILLED: "killed", SURVIVED: "survived", TIMEOUT: "timeout", NO_TESTS: "no tests"}.get(code, "killed")
            counts[status] += 1
            if status in ("survived", "no tests"):
                survivors.append(f"{status}: {name}")
            if number % 25 == 0 or number == len(names):
                print(f"mutation: {number}/{len(names)} {counts} ({time.monotonic() - run_started:.0f} s)", flush=True)
        measured = sum(counts.values())
        killed = counts["killed"] + counts["timeout"]
        tested = measured - counts["no tests"]
        print(f"\nmutation: {measured} mutants measured: {counts['killed']} killed, {counts['timeout']} timeout, "
              f"{counts['survived']} survived, {counts['no tests']} no tests; "
              f"score (killed + timeout) / measured = {killed / measured if measured else 0:.1%}, "
              f"of those some test reaches = {killed / tested if tested else 0:.1%}; "
              f"{time.monotonic() - run_started:.0f} s")
        for line in survivors:
            print(f"  {line}")
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", choices=sorted(MODULES))
    parser.add_argument("--only", help="fnmatch pattern of mutant names, e.g. 'automations.policy.rules.x_seats*'")
    parser.add_argument("--sample", type=int, help="measure a seeded uniform sample of this many mutants")
    parser.add_argument("--rerun", action="store_true", help="measure again, ignoring stored results")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="measure again only the mutants stored as survived or no tests (after adding tests)")
    parser.add_argument("--verbose", action="store_true", help="show the children's output")
    args = parser.parse_args()
    sources, selection = MODULES[args.module]

    os.chdir(ROOT)
    for name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "MUTANT_UNDER_TEST"):
        os.environ.pop(name, None)  # SQLite, the test settings from pyproject, no stale mutant
    generate_mutants()

    # From here on the tree is mutants/: its automations/ must be the one imported.
    os.chdir(ROOT / "mutants")
    sys.path[:] = [str(ROOT / "mutants")] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "bench")]
    import pytest

    import automations

    if not Path(automations.__file__).resolve().is_relative_to(ROOT / "mutants"):
        raise SystemExit(f"mutation: automations imported from {automations.__file__}, not mutants/")
    plugin = MutationPlugin(sources, selection, only=args.only, sample=args.sample, rerun=args.rerun,
                            rerun_survivors=args.rerun_survivors, verbose=args.verbose)
    return pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", *selection, WARM_UP], plugins=[plugin])


if __name__ == "__main__":
    sys.exit(main())
