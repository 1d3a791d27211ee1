"""``gateway fixtures list | check | prune`` (registered by ``gateway.ops.cli``).

>>> gateway fixtures list                    # every cassette: test, tiers, age, status
>>> gateway fixtures check --max-age 14d     # exit 1 when one is stale, unused or unreadable
>>> gateway fixtures prune --dry-run         # what would go: cassettes no test uses
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.testing.inventory import (
    DEFAULT_MAX_AGE,
    Entry,
    as_json,
    collect_tests,
    inventory,
    parse_age,
    render,
)


def add_fixtures_parser(sub: Any) -> None:
    """Add ``fixtures`` to the ``gateway`` command's subparsers."""
    parser = sub.add_parser("fixtures", help="list, check or prune recorded response fixtures")
    parser.add_argument("action", choices=("list", "check", "prune"))
    parser.add_argument("--dir", default="tests/cassettes", help="cassette directory")
    parser.add_argument(
        "--max-age", default=DEFAULT_MAX_AGE, help="older is stale: 7d, 36h, 90m, seconds"
    )
    parser.add_argument(
        "--no-collect",
        action="store_true",
        help="skip `pytest --collect-only` (no unused detection)",
    )
    parser.add_argument(
        "--pytest-args", default="", help="passed to the collection run, e.g. 'tests/ -p myplug'"
    )
    parser.add_argument("--stale", action="store_true", help="prune: stale ones go too")
    parser.add_argument("--dry-run", action="store_true", help="prune: only say what would go")
    parser.add_argument("--json", action="store_true", help="list: machine-readable output")
    parser.set_defaults(func=fixtures_command)


def fixtures_command(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    try:
        max_age = parse_age(args.max_age)
    except ValueError as exc:
        _err(f"gateway fixtures: --max-age: {exc}")
        return 2
    if not root.is_dir():
        _err(f"gateway fixtures: no cassette directory at {root}")
        return 2
    tests = None
    if not args.no_collect:
        try:
            tests = collect_tests(args.pytest_args.split())
        except (RuntimeError, OSError) as exc:
            _err(f"gateway fixtures: {exc}")
            return 2
    entries = inventory(root, max_age_s=max_age, tests=tests)
    if args.action == "list":
        _out(as_json(entries, root) if args.json else render(entries, root))
        return 0
    if args.action == "check":
        return _check(entries, root)
    return _prune(entries, root, stale=args.stale, dry_run=args.dry_run)


def _check(entries: list[Entry], root: Path) -> int:
    bad = [e for e in entries if e.status != "ok"]
    for e in bad:
        why = e.error or (f"test {e.test} " + e.status.replace(",", " and "))
        _out(f"{e.path.relative_to(root)}: {why}")
    hint = "re-record stale ones with RECORD_FIXTURES=refresh; `gateway fixtures prune` unused"
    _out(f"{len(entries)} cassettes, {len(bad)} need attention" + (f" ({hint})" if bad else ""))
    return 1 if bad else 0


def _prune(entries: list[Entry], root: Path, *, stale: bool, dry_run: bool) -> int:
    doomed = [e for e in entries if e.unused or (stale and e.stale)]
    for e in doomed:
        _out(f"{'would remove' if dry_run else 'removed'} {e.path.relative_to(root)} ({e.status})")
        if not dry_run:
            e.path.unlink()
    for folder in sorted({e.path.parent for e in doomed}, key=lambda p: len(p.parts), reverse=True):
        if not dry_run and folder != root and not any(folder.iterdir()):
            folder.rmdir()
    _out(f"{len(doomed)} of {len(entries)} cassettes {'to remove' if dry_run else 'removed'}")
    return 0


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
