"""Redis key names are spelled in ``shared/keys.py`` only, RQ's come from RQ's own class attributes, and job specs
and records are read through their types, never as dicts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from shared.keys import RQ_JOB_PREFIX, RQ_QUEUE_PREFIX, Keys, keys_for
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CODE = ("bot", "cli", "shared", "worker", "training", "bench", "web")
"""Packages of code (the tests are free to spell keys, to check them)."""
KEYS_MODULE = ROOT / "shared" / "keys.py"
RQ_KEY = re.compile(r"\brq:(job|queue|wip|workers|registry|execution|finished|failed|canceled|results)\b")
"""A raw RQ key prefix."""
OUR_KEY = re.compile(r"\{[^{}]*prefix[^{}]*\}:")
"""An f-string building one of our keys from the queue prefix (``f"{settings.queue_prefix}:..."``)."""


def code_files() -> list[Path]:
    return [path for package in CODE if (ROOT / package).is_dir() for path in sorted((ROOT / package).rglob("*.py"))]


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant and f-string (as source) in ``path``, docstrings excluded."""
    source = path.read_text()
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            found.append((node.lineno, ast.get_source_segment(source, node) or ""))
    return found


def test_no_module_but_the_keys_module_spells_a_redis_key() -> None:
    offenders = []
    for path in code_files():
        if path == KEYS_MODULE:
            continue
        for line, text in string_literals(path):
            if RQ_KEY.search(text) or OUR_KEY.search(text) or "queue_prefix}" in text:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {text[:80]!r}")
    assert offenders == []


def test_the_grep_catches_a_raw_key(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('KEY = f"{settings.queue_prefix}:paused"\nLUA = "local job = \'rq:job:\' .. id"\n')
    texts = [text for _, text in string_literals(sample)]
    assert any(OUR_KEY.search(text) for text in texts) and any(RQ_KEY.search(text) for text in texts)


def test_no_code_reads_a_spec_or_record_as_a_dict() -> None:
    offenders = []
    allowed = {ROOT / "shared" / "jobs" / "spec.py", ROOT / "shared" / "jobs" / "record.py"}
    for path in code_files():
        if path in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if "spec.get(" in line or '["spec"]' in line or "['spec']" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_rq_keys_come_from_rq_itself() -> None:
    keys = Keys("imagine")
    assert keys.lane_list("fast") == Queue("imagine:fast", connection=redis.Redis()).key  # connects lazily: no I/O
    assert keys.started_registry("fast") == StartedJobRegistry.key_template.format("imagine:fast")
    assert keys.job("abc") == Job.key_for("abc")
    assert Job.redis_job_namespace_prefix == RQ_JOB_PREFIX and Queue.redis_queue_namespace_prefix == RQ_QUEUE_PREFIX


def test_keys_of_a_queue_name_find_the_same_keys_as_the_settings() -> None:
    settings = Settings(queue_prefix="imagine-test")
    keys = keys_for(settings)
    assert Keys.of_queue(keys.queue_name("relax")) == keys
    assert keys.paused == "imagine-test:paused" and keys.cancel("j1") == "imagine-test:cancel:j1"
    with pytest.raises(ValueError, match="queue name must be '<prefix>:<lane>', got 'fast'"):
        Keys.of_queue("fast")
    with pytest.raises(ValueError, match="queue prefix must be a non-empty word without blanks, got 'a b'"):
        Keys("a b")
