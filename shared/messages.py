"""Every sentence that members and admins see, from the bot, the workers and the CLI, in one place to review and
translate; each is fitted to Discord's limits here (``shared.discord_wire.limits``).

Lines that carry a member's text (the prompt, a reason) escape it first and cut what is escaped to the room the rest of
the line leaves, so the whole line stays within ``DISCORD_CONTENT_MAX`` however many markdown characters the prompt
holds. The prompt language's own errors (which parameter, which value, what is allowed) are written where the rule
is, in ``shared.prompt.parser``, ``shared.prompt.resolve`` and ``shared.safety``; this module frames them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from shared import defaults
from shared.discord_wire.limits import escape, escape_fitted, fit_content
from shared.jobs.spec import JobKind

log = logging.getLogger(__name__)

# -- generic -------------------------------------------------------------------------------------------------------

QUEUE_DOWN = "The image queue is unavailable right now; please try again in a minute."
"""When Redis cannot be reached."""

INTERNAL_ERROR = "Something went wrong on our side; please try again. (The admins have the details in the logs.)"
"""Any unexpected error in the bot (the details go to its log)."""

UNKNOWN_BUTTON = "This button is not one I know any more."
"""A click on a custom_id this version cannot read."""

NO_ACTIVE_JOBS = "You have no running or queued jobs."
"""/cancel without a job id, or /info, when the member has none."""

NOT_A_RESULT = "That message is not an imagine result."
"""The "Job record" message command on another message."""

CANCELED = "Cancelled."
"""The last words of a job the member cancelled."""

PAUSED_NOTE = "The queue is paused by the admins: your job is kept and starts when the queue resumes."
"""Told (privately) to a member who submits while the queue is paused."""

OUT_OF_MEMORY = "The GPU ran out of memory for this job; try a smaller --ar or --quality."
"""A job that ran out of (GPU) memory."""

ABANDONED = "The worker running this job stopped unexpectedly (it was retried); please try again."
"""A job whose worker died on its last try."""

WITHHELD = "The result was withheld by the server's image moderation."
"""A result the image-moderation hook flagged with the ``withhold`` action."""

NOT_QUEUED = "could not be queued, please try again"
"""The reason shown on a waiting message whose job Redis did not take."""


def job_internal_error(kind: str, job_id: str) -> str:
    """A job that failed with an unexpected error (``kind``: the exception's class name; the details are logged)."""
    return f"The worker hit an internal error ({kind}); the admins can find job {job_id} in its log."


# -- prompts, limits, bans ---------------------------------------------------------------------------------------------


def prompt_error(message: str, options: tuple[tuple[str, str], ...] = ()) -> str:
    """A bad prompt: the parser's message as it is (it names the parameter and what is allowed); an unknown parameter
    also lists the member's own /prefer ``options``, the other names a prompt may use."""
    text = f"Sorry, I can't read that prompt: {message}"
    if options and "unknown parameter" in message:
        text += f" Your options: {', '.join('--' + name for name, _ in options)}."
    return fit_content(text)


def banned(reason: str) -> str:
    """A banned member tried to submit."""
    return "You are banned from making images here" + (f": {reason}" if reason else ".")


def queued_limit(have: int, allowed: int, jobs: int = 1) -> str:
    """A member at their queued limit (``jobs``: how many jobs the refused prompt makes)."""
    extra = f" (this prompt makes {jobs})" if jobs > 1 else ""
    return f"You have {have} jobs queued, the limit is {allowed}{extra}."


def size_too_large(width: int, height: int, model: str, budget: int) -> str:
    """A job far beyond its model's native pixel budget."""
    return (
        f"{width}x{height} is too large for model {model}: at most {budget} pixels "
        f"({defaults.MAX_PIXEL_BUDGET_FACTOR:g}x its native size)"
    )


def not_queued_all(failed: int, total: int) -> str:
    """The CLI's note when some of a prompt's jobs were not queued."""
    return f"{failed} of this prompt's {total} jobs could not be queued"


# -- results and follow-ups --------------------------------------------------------------------------------------------


def kept_for(ttl_s: int) -> str:
    """A lifetime in words: "30 days", "12 hours", "90 seconds"."""
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if (ttl_s >= seconds and ttl_s % seconds == 0) or ttl_s >= 2 * seconds:
            count = ttl_s // seconds
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{ttl_s} second{'s' if ttl_s != 1 else ''}"


def image_expired(index: int, job_id: str, ttl_s: int) -> str:
    """An image a button needs is no longer stored."""
    return f"image {index + 1} of job {job_id} is no longer stored (results are kept {kept_for(ttl_s)})"


def result_expired(job_id: str, ttl_s: int) -> str:
    """A job record a command needs is no longer stored."""
    return f"job {job_id} is no longer stored (results are kept {kept_for(ttl_s)})"


def expired(message: str) -> str:
    """A follow-up or command whose source is gone (``message``: a ``ResultExpired``'s)."""
    return f"Sorry, {message}. Make a new one with /imagine."


def cannot_follow_up(reason: str) -> str:
    """A button whose job cannot be made from its source."""
    return f"Sorry, that can't be done: {reason}."


def wrong_model(job_model: str, served: str) -> str:
    """A job made for a model that this worker does not serve (it is never run at another model's size)."""
    return f"this job was made for model {job_model}, which this worker does not serve (it serves {served})"


def model_unavailable(model: str) -> str:
    """A configured model that the worker could not load."""
    return f"model {model} could not be loaded on this worker (the admins can see why in its log)"


# -- /describe ---------------------------------------------------------------------------------------------------------


def not_an_image(filename: str, content_type: str) -> str:
    """/describe with a file that is not an image."""
    return f"/describe needs an image (PNG, JPEG or WebP); {filename!r} is {content_type or 'of unknown type'}."


def image_too_large(filename: str, size: int, limit: int) -> str:
    """/describe with an image over the download limit."""
    return f"/describe takes images up to {limit / 1e6:.0f} MB; {filename!r} is {size / 1e6:.1f} MB."


def cannot_describe(model: str) -> str:
    """/describe on a model without an alignment scorer and candidate prompts."""
    return f"model {model} cannot describe images: it has no image-text scorer and candidate prompts"


# -- /settings, /prefer ------------------------------------------------------------------------------------------------


def not_saved(reason: str) -> str:
    """A /settings or /prefer value that was refused."""
    return fit_content(f"Not saved: {reason}")


def member_defaults(fields: dict[str, Any], options: int) -> str:
    """/settings: the member's defaults in one line (``options``: how many /prefer options they have)."""
    shown = ", ".join(f"{key}: `{escape(str(value)) or '-'}`" for key, value in fields.items())
    return fit_content(f"Your defaults - {shown}, options: {options} (/prefer option list)")


def member_options(options: tuple[tuple[str, str], ...], suffix: str) -> str:
    """/prefer: the member's options and suffix."""
    lines = [f"`--{name}` = `{escape(value)}`" for name, value in options] or ["No options saved."]
    lines.append(f"Suffix: `{escape(suffix)}`" if suffix else "No suffix.")
    return fit_content("\n".join(lines))


# -- /cancel, /info, /show, /record ------------------------------------------------------------------------------------


def not_yours(job_id: str) -> str:
    """/cancel of someone else's job."""
    return f"Job `{job_id}` is not yours to cancel."


def unknown_job(job_id: str) -> str:
    """/cancel, /show or /record of an id Redis does not know."""
    return f"I don't know a job `{escape_fitted(job_id, 100)}` (or it has expired)."


def cancel_outcome(job_id: str, outcome: str) -> str:
    """What ``shared.queue.client.request_cancel`` did, in words."""
    return {
        "canceled": f"Job `{job_id}` was removed from the queue.",
        "stopping": f"Job `{job_id}` is stopping at its next step.",
    }.get(outcome, f"Job `{job_id}` is not running or queued any more.")


def info_line(job_id: str, *, running: bool, progress: float, position: int | None, lane: str, prompt: str) -> str:
    """One job of /info."""
    queued = f"queued, #{position}" if position else "queued"
    where = f"running, {round(100 * progress)}%" if running else queued
    return f"`{job_id}` {where} ({lane}): {escape_fitted(prompt, 80)}"


def info(lines: list[str], totals: dict[str, int]) -> str:
    """/info: the member's jobs (``info_line`` each) and the totals."""
    body = ["**Your jobs**", *(lines or [NO_ACTIVE_JOBS])]
    body.append(
        f"Queued in all lanes: {totals.get('queued', 0)} - running: {totals.get('running', 0)}"
        f" - jobs you made: {totals.get('made', 0)}"
    )
    return fit_content("\n".join(body))


def record(data: dict[str, Any]) -> str:
    """A job's reproducibility record as a JSON code block, cut to fit one message. Backticks are written as JSON
    escapes, so a prompt cannot close the code block."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str).replace("`", "\\u0060")
    room = defaults.DISCORD_CONTENT_MAX - len("```json\n\n```") - len("\n... (cut)")
    if len(text) > room:
        text = text[:room] + "\n... (cut)"
    return f"```json\n{text}\n```"


# -- the lines of a job's messages -------------------------------------------------------------------------------------


def mention(owner: str) -> str:
    """A user mention for a Discord user id (a non-numeric owner, e.g. ``local``, is shown escaped as it is)."""
    return f"<@{owner}>" if owner.isdigit() else escape_fitted(owner, 100)


def eta_text(seconds: float) -> str:
    """A rough ETA for members: "~40 s" (10 s steps under a minute), "~3 min", "~1 h 15 min" (5 min steps)."""
    if seconds < 0:
        raise ValueError(f"eta seconds must be >= 0, got {seconds!r}")
    if seconds < 60:
        return f"~{max(10, round(seconds / 10) * 10)} s" if seconds < 55 else "~1 min"
    if seconds < 600:
        return f"~{round(seconds / 60)} min"
    minutes = round(seconds / 300) * 5
    return f"~{minutes} min" if minutes < 60 else f"~{minutes // 60} h {minutes % 60} min".replace(" 0 min", "")


def _with_prompt(prompt: str, rest: str) -> str:
    """ "**<prompt>**" + ``rest``: the prompt escaped and cut to what the line leaves of ``DISCORD_CONTENT_MAX`` (and to
    ``DISCORD_PROMPT_SHOWN_MAX``), so the line always fits."""
    room = min(defaults.DISCORD_PROMPT_SHOWN_MAX, defaults.DISCORD_CONTENT_MAX - len(rest) - 4)
    return f"**{escape_fitted(prompt, max(room, 1))}**{rest}"


def waiting_line(prompt: str, owner: str, position: int | None = None, eta_s: float | None = None) -> str:
    """ "**prompt** - <@user> (Waiting to start)", with the queue position and a rough ETA when known."""
    rest = f" - {mention(owner)} (Waiting to start)"
    if position is not None and position > 0:
        rest += f" - #{position} in the queue"
    if eta_s is not None:
        rest += f" - {eta_text(eta_s)}"
    return _with_prompt(prompt, rest)


def waiting_unserved_line(prompt: str, owner: str, model: str, position: int | None = None) -> str:
    """The waiting message of a job whose model no live worker holds: it waits, in its place, for one that does."""
    rest = f" - {mention(owner)} (Waiting to start)"
    if position is not None and position > 0:
        rest += f" - #{position} in the queue"
    rest += f" - no worker holds the model {escape_fitted(model, 100)} now; the job waits until one does"
    return _with_prompt(prompt, rest)


def cli_unserved(model: str, job_id: str) -> str:
    """The CLI's note for a queued job whose model no live worker holds."""
    return f"no worker holds the model {model} now; job {job_id} waits until one does (WORKER_MODELS)"


def workers_models(models: Sequence[str], families: Sequence[str], held: Sequence[str]) -> str:
    """/workers: what one worker serves (the models it takes jobs of, their families, the ones loaded now)."""
    if not models:
        return "serves no announced model"
    family = f" ({', '.join(families)})" if families else ""
    loaded = f", loaded: {', '.join(held)}" if held else ""
    return f"serves {', '.join(models)}{family}{loaded}"


def progress_line(prompt: str, owner: str, fraction: float, lane: str) -> str:
    """ "**prompt** - <@user> (42%) (fast)": the waiting message while the job runs."""
    percent = round(100 * min(max(fraction, 0.0), 1.0))
    return _with_prompt(prompt, f" - {mention(owner)} ({percent}%) ({lane})")


def failed_line(prompt: str, owner: str, reason: str) -> str:
    """The waiting message's last words when a job fails or is cancelled (``reason`` is member-facing)."""
    shown = escape_fitted(reason, defaults.DISCORD_REASON_SHOWN_MAX)
    return _with_prompt(prompt, f" - {mention(owner)} ({shown})")


def variation_detail(strength: float) -> str:
    """ "subtle" or "strong": the name of a variation strength, for the result line."""
    return "subtle" if strength <= defaults.VARY_SUBTLE_STRENGTH else "strong"


def result_line(prompt: str, owner: str, lane: str, kind: JobKind = JobKind.GRID, detail: str = "") -> str:
    """The final message's line: "**prompt** - <@user> (fast)"; upscales, variations and outpaints say what they are."""
    who = mention(owner)
    if kind is JobKind.UPSCALE:
        rest = f" - Upscaled ({detail.title() or 'Subtle'}) by {who} ({lane})"
    elif kind is JobKind.VARIATION:
        rest = f" - Variations ({detail.title() or 'Strong'}) by {who} ({lane})"
    elif kind is JobKind.OUTPAINT:
        rest = f" - {escape_fitted(detail, 100) or 'Outpainted'} by {who} ({lane})"
    else:
        rest = f" - {who} ({lane})"
    return _with_prompt(prompt, rest)


def describe_text(owner: str, descriptions: list[tuple[str, float]]) -> str:
    """A /describe result: the candidate prompts, numbered as their buttons, best first; each prompt gets an equal
    share of the message."""
    head = f"Prompts for the image of {mention(owner)} (best match first):"
    room = (defaults.DISCORD_CONTENT_MAX - len(head)) // max(1, len(descriptions)) - len("\n**9** ")
    lines = [head] + [f"**{n}** {escape_fitted(text, room)}" for n, (text, _) in enumerate(descriptions, start=1)]
    return fit_content("\n".join(lines))


# -- button labels -----------------------------------------------------------------------------------------------------

LABEL_UPSCALE_SUBTLE = "Upscale (Subtle)"
"""Under an upscaled image."""
LABEL_UPSCALE_CREATIVE = "Upscale (Creative)"
"""Under an upscaled image."""
LABEL_VARY_SUBTLE = "Vary (Subtle)"
"""Under an upscaled image."""
LABEL_VARY_STRONG = "Vary (Strong)"
"""Under an upscaled image."""
LABEL_MAKE_SQUARE = "Make Square"
"""Under a non-square upscaled image."""


def label_zoom_out(factor: float) -> str:
    """ "Zoom Out 2x" (also what the result line of the zoomed job says)."""
    return f"Zoom Out {factor:g}x"


def label_pan(direction: str) -> str:
    """ "Pan Left": what the result line of a pan says."""
    return f"Pan {direction.title()}"


# -- admin -------------------------------------------------------------------------------------------------------------

NOT_ADMIN = "Only the server's admins (Manage Server, or a configured admin role) can use this command."
"""Reply to a member without rights who reached an admin command anyway."""

CANCELED_BY_ADMIN = "cancelled by an admin"
"""Reason shown on the waiting message of a job an admin removed from the queue."""

QUEUE_PAUSED = "Queue paused: running jobs finish, new jobs wait."
"""/queue pause."""

QUEUE_RESUMED = "Queue resumed."
"""/queue resume."""

NO_WORKERS = "No workers."
"""/workers and /queue status without workers."""


def queue_cleared(count: int, lane: str) -> str:
    """/queue clear."""
    return f"Removed {count} waiting job(s) from {lane or 'all lanes'}."


def admin_cancel_outcome(job_id: str, outcome: str) -> str:
    """/queue cancel."""
    return {
        "canceled": f"Job `{job_id}` was removed from the queue.",
        "stopping": f"Job `{job_id}` stops at its next step.",
    }.get(outcome, f"Job `{job_id}` is not queued or running.")


def purged(member: str, canceled: int, stopping: int) -> str:
    """/queue purge."""
    return f"Purged <@{member}>: {canceled} removed, {stopping} stopping."


def banned_member(member: str, reason: str) -> str:
    """/ban."""
    return f"Banned <@{member}>" + (f": {escape_fitted(reason, 300)}" if reason else ".")


def unbanned_member(member: str, was_banned: bool) -> str:
    """/unban."""
    return f"Unbanned <@{member}>." if was_banned else f"<@{member}> was not banned."


def limits_line(scope_name: str, running: int, queued: int) -> str:
    """One scope of /limits show, or the answer to /limits set."""
    return f"{scope_name}: {running} running, {queued} queued"


def audit_copy(actor: str, text: str) -> str:
    """An admin action copied to the audit channel."""
    return fit_content(f"<@{actor}>: {text}")


def admin_text(lines: list[str]) -> str:
    """Any multi-line admin answer, fitted to one message."""
    return fit_content("\n".join(lines))
