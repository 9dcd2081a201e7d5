"""Member-facing texts of the bot: short and friendly; the details go to the logs."""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.queue.client import JobState
from shared.stores.member_settings import MemberSettings

log = logging.getLogger(__name__)

QUEUE_DOWN = "The image queue is unavailable right now; please try again in a minute."
"""When Redis cannot be reached."""

SOMETHING_WRONG = "Something went wrong on our side; please try again. (The admins have the details in the logs.)"
"""Any unexpected error."""

UNKNOWN_BUTTON = "This button is not one I know any more."
"""A click on a custom_id this version cannot read."""

NO_ACTIVE_JOBS = "You have no running or queued jobs."
"""/cancel without a job id, or /info, when the member has none."""


def prompt_error(message: str, member: MemberSettings | None = None) -> str:
    """A bad prompt: the parser's message as it is (it names the parameter and what is allowed); an unknown parameter
    also lists the member's own /prefer options, which are the other names a prompt may use."""
    text = f"Sorry, I can't read that prompt: {message}"
    if member is not None and member.options and "unknown parameter" in message:
        text += f" Your options: {', '.join('--' + name for name, _ in member.options)}."
    return text


def member_defaults(member: MemberSettings) -> str:
    """/settings: the member's defaults in one line."""
    shown = ", ".join(f"{key}: `{value or '-'}`" for key, value in member.to_dict().items() if key != "options")
    return f"Your defaults - {shown}, options: {len(member.options)} (/prefer option list)"


def member_options(member: MemberSettings) -> str:
    """/prefer: the member's options and suffix."""
    lines = [f"`--{name}` = `{value}`" for name, value in member.options] or ["No options saved."]
    lines.append(f"Suffix: `{member.suffix}`" if member.suffix else "No suffix.")
    return "\n".join(lines)


def not_an_image(filename: str, content_type: str) -> str:
    """/describe with a file that is not an image."""
    return f"/describe needs an image (PNG, JPEG or WebP); {filename!r} is {content_type or 'of unknown type'}."


def image_too_large(filename: str, size: int, limit: int) -> str:
    """/describe with an image over the download limit."""
    return f"/describe takes images up to {limit / 1e6:.0f} MB; {filename!r} is {size / 1e6:.1f} MB."


def cannot_follow_up(reason: str) -> str:
    """A button whose job cannot be made from its source (the reason names the value and what is allowed)."""
    return f"Sorry, that can't be done: {reason}."


def expired(message: str) -> str:
    """A follow-up whose source images are no longer stored."""
    return f"Sorry, {message}. Make a new one with /imagine."


def not_yours(job_id: str) -> str:
    """/cancel of someone else's job."""
    return f"Job `{job_id}` is not yours to cancel."


def unknown_job(job_id: str) -> str:
    """/cancel, /show or /record of an id Redis does not know."""
    return f"I don't know a job `{job_id}` (or it has expired)."


def cancel_outcome(job_id: str, outcome: str) -> str:
    """What ``shared.queue.request_cancel`` did, in words."""
    return {
        "canceled": f"Job `{job_id}` was removed from the queue.",
        "stopping": f"Job `{job_id}` is stopping at its next step.",
    }.get(outcome, f"Job `{job_id}` is not running or queued any more.")


def info(states: list[tuple[JobState, int | None]], totals: dict[str, int]) -> str:
    """/info: the member's running and queued jobs (with queue positions) and the totals."""
    lines = ["**Your jobs**"]
    if not states:
        lines.append(NO_ACTIVE_JOBS)
    for state, position in states:
        prompt = str(state.spec.get("prompt", ""))[:80]
        if state.status.value == "started":
            where = f"running, {round(100 * state.progress)}%"
        else:
            where = f"queued, #{position}" if position else "queued"
        lines.append(f"`{state.job_id}` {where} ({state.spec.get('lane', '?')}): {prompt}")
    lines.append(
        f"Queued in all lanes: {totals.get('queued', 0)} - running: {totals.get('running', 0)}"
        f" - jobs you made: {totals.get('made', 0)}"
    )
    return "\n".join(lines)


def record(data: dict[str, Any]) -> str:
    """A job's reproducibility record as a JSON code block (cut to fit one message)."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    if len(text) > 1900:
        text = text[:1880] + "\n... (cut)"
    return f"```json\n{text}\n```"
