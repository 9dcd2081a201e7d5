"""The two private APIs the project touches, each behind one adapter, fail these tests loudly on an upgrade that
changes them: RQ's (``worker.rq_adapter``) and discord.py's parser table (``bot.gateway_guard``)."""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import version

import discord
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bot import gateway_guard
from worker import rq_adapter


def test_rq_is_in_the_supported_range_and_has_every_private_member_used() -> None:
    assert Version(version("rq")) in SpecifierSet(",".join(rq_adapter.SUPPORTED_RQ))
    rq_adapter.check_rq()  # raises UnsupportedRQ naming what changed


def test_the_rq_check_names_a_changed_member(monkeypatch: pytest.MonkeyPatch) -> None:
    from rq.worker import BaseWorker

    def renamed(self: object, job: object, queue: object, execution: object, result: object) -> None: ...

    monkeypatch.setattr(BaseWorker, "_finalize_success", renamed)
    with pytest.raises(rq_adapter.UnsupportedRQ, match=r"BaseWorker._finalize_success.*return_value"):
        rq_adapter.check_rq()
    assert "return_value" not in inspect.signature(BaseWorker._finalize_success).parameters


def test_discord_py_is_in_the_supported_range_and_its_parsers_can_be_guarded(caplog: pytest.LogCaptureFixture) -> None:
    assert Version(discord.__version__) in SpecifierSet(",".join(gateway_guard.SUPPORTED_DISCORD))
    client = discord.Client(intents=discord.Intents.none())
    parsers = gateway_guard.parsers_of(client)
    assert set(gateway_guard.GUARDED_EVENTS) <= set(parsers)
    gateway_guard.guard(client)
    with caplog.at_level(logging.ERROR):
        gateway_guard.parsers_of(client)["INTERACTION_CREATE"]({"not": "an interaction"})  # logged, not raised
    assert "ignoring malformed INTERACTION_CREATE payload" in caplog.text


def test_the_pins_match_the_adapters() -> None:
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"rq{",".join(rq_adapter.SUPPORTED_RQ)}"' in pyproject
    assert f'"discord.py{",".join(gateway_guard.SUPPORTED_DISCORD)}"' in pyproject
