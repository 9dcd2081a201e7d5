"""Every sentence that members and admins see, from the bot, the workers and the CLI, in one place to review and
translate; each is fitted to Discord's limits here (``shared.discord_wire.limits``).

Every template is translated into the member's language (``shared.i18n``: the locale in force, set per interaction by
the bot and per job by the workers) before it is formatted; English is the fallback. The constants below are
translated when they are read (``messages.QUEUE_DOWN`` is looked up in the catalogue at each access, see the end of
the module), so code that reads them keeps working unchanged. Prompts and other member text are never translated.

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
from shared.i18n import N_, ntr, tr, translate
from shared.jobs.spec import JobKind

log = logging.getLogger(__name__)

# -- generic -------------------------------------------------------------------------------------------------------

QUEUE_DOWN = N_("The image queue is unavailable right now; please try again in a minute.")
"""When Redis cannot be reached."""

INTERNAL_ERROR = N_("Something went wrong on our side; please try again. (The admins have the details in the logs.)")
"""Any unexpected error in the bot (the details go to its log)."""

UNKNOWN_BUTTON = N_("This button is not one I know any more.")
"""A click on a custom_id this version cannot read."""

NO_ACTIVE_JOBS = N_("You have no running or queued jobs.")
"""/cancel without a job id, or /info, when the member has none."""

NOT_A_RESULT = N_("That message is not an imagine result.")
"""The "Job record" message command on another message."""

CANCELED = N_("Cancelled.")
"""The last words of a job the member cancelled."""

PAUSED_NOTE = N_("The queue is paused by the admins: your job is kept and starts when the queue resumes.")
"""Told (privately) to a member who submits while the queue is paused."""

OUT_OF_MEMORY = N_("The GPU ran out of memory for this job; try a smaller --ar or --quality.")
"""A job that ran out of (GPU) memory."""

ABANDONED = N_("The worker running this job stopped unexpectedly (it was retried); please try again.")
"""A job whose worker died on its last try."""

WITHHELD = N_("The result was withheld by the server's image moderation.")
"""A result the image-moderation hook flagged with the ``withhold`` action."""

NOT_QUEUED = N_("could not be queued, please try again")
"""The reason shown on a waiting message whose job Redis did not take."""


def job_internal_error(kind: str, job_id: str) -> str:
    """A job that failed with an unexpected error (``kind``: the exception's class name; the details are logged)."""
    return tr(
        "The worker hit an internal error ({kind}); the admins can find job {job_id} in its log.",
        kind=kind,
        job_id=job_id,
    )


# -- prompts, limits, bans ---------------------------------------------------------------------------------------------


def prompt_error(message: str, options: tuple[tuple[str, str], ...] = ()) -> str:
    """A bad prompt: the parser's message as it is (it names the parameter and what is allowed); an unknown parameter
    also lists the member's own /prefer ``options``, the other names a prompt may use."""
    text = tr("Sorry, I can't read that prompt: {message}", message=message)
    if options and ("unknown parameter" in message or translate(N_("unknown parameter")) in message):
        text += " " + tr("Your options: {names}.", names=", ".join("--" + name for name, _ in options))
    return fit_content(text)


def banned(reason: str) -> str:
    """A banned member tried to submit."""
    if reason:
        return tr("You are banned from making images here: {reason}", reason=reason)
    return tr("You are banned from making images here.")


def queued_limit(have: int, allowed: int, jobs: int = 1) -> str:
    """A member at their queued limit (``jobs``: how many jobs the refused prompt makes)."""
    if jobs > 1:
        return tr(
            "You have {have} jobs queued, the limit is {allowed} (this prompt makes {jobs}).",
            have=have,
            allowed=allowed,
            jobs=jobs,
        )
    return tr("You have {have} jobs queued, the limit is {allowed}.", have=have, allowed=allowed)


def size_too_large(width: int, height: int, model: str, budget: int) -> str:
    """A job far beyond its model's native pixel budget."""
    return tr(
        "{width}x{height} is too large for model {model}: at most {budget} pixels ({factor}x its native size)",
        width=width,
        height=height,
        model=model,
        budget=budget,
        factor=f"{defaults.MAX_PIXEL_BUDGET_FACTOR:g}",
    )


def not_queued_all(failed: int, total: int) -> str:
    """The CLI's note when some of a prompt's jobs were not queued."""
    return tr("{failed} of this prompt's {total} jobs could not be queued", failed=failed, total=total)


# -- results and follow-ups --------------------------------------------------------------------------------------------


def kept_for(ttl_s: int) -> str:
    """A lifetime in words: "30 days", "12 hours", "90 seconds"."""
    units = (
        (86400, N_("{count} day"), N_("{count} days")),
        (3600, N_("{count} hour"), N_("{count} hours")),
        (60, N_("{count} minute"), N_("{count} minutes")),
    )
    for seconds, one, many in units:
        if (ttl_s >= seconds and ttl_s % seconds == 0) or ttl_s >= 2 * seconds:
            count = ttl_s // seconds
            return ntr(one, many, count, count=count)
    return ntr("{count} second", "{count} seconds", ttl_s, count=ttl_s)


def image_expired(index: int, job_id: str, ttl_s: int) -> str:
    """An image a button needs is no longer stored."""
    return tr(
        "image {number} of job {job_id} is no longer stored (results are kept {kept})",
        number=index + 1,
        job_id=job_id,
        kept=kept_for(ttl_s),
    )


def result_expired(job_id: str, ttl_s: int) -> str:
    """A job record a command needs is no longer stored."""
    return tr("job {job_id} is no longer stored (results are kept {kept})", job_id=job_id, kept=kept_for(ttl_s))


def expired(message: str) -> str:
    """A follow-up or command whose source is gone (``message``: a ``ResultExpired``'s)."""
    return tr("Sorry, {message}. Make a new one with /imagine.", message=message)


def cannot_follow_up(reason: str) -> str:
    """A button whose job cannot be made from its source."""
    return tr("Sorry, that can't be done: {reason}.", reason=reason)


def wrong_model(job_model: str, served: str) -> str:
    """A job made for a model that this worker does not serve (it is never run at another model's size)."""
    return tr(
        "this job was made for model {job_model}, which this worker does not serve (it serves {served})",
        job_model=job_model,
        served=served,
    )


def model_unavailable(model: str) -> str:
    """A configured model that the worker could not load."""
    return tr("model {model} could not be loaded on this worker (the admins can see why in its log)", model=model)


def model_not_supported(model: str, detail: str) -> str:
    """A configured model whose pipeline class the engine has no family for (``detail`` names the class and the
    supported families); one line, shown at worker start and to members whose job needed it."""
    return tr("model {model} cannot be served: {detail}", model=model, detail=detail)


def model_cannot(model_title: str, action: str) -> str:
    """A follow-up (``action``: "variations", "outpaints") that the model's family cannot run."""
    return tr("{model_title} models cannot make {action} here", model_title=model_title, action=action)


# -- result footnotes (worker notes -> the final message) -----------------------------------------------------------


def ignored_footnote(flags: list[str], model_title: str) -> str:
    """Prompt options the model could not apply (``--no`` on a guidance-distilled model, ``--tile`` on a
    transformer): the job ran without them, and the member is told so under the result."""
    if len(flags) == 1:
        return tr("-# {flags} ignored: {model_title} cannot apply it", flags=flags[0], model_title=model_title)
    return tr("-# {flags} ignored: {model_title} cannot apply them", flags=", ".join(flags), model_title=model_title)


def truncated_footnote(kept_tokens: int | None) -> str:
    """A prompt longer than the model's text encoder takes: cut, and the member told where (when known)."""
    if kept_tokens:
        return tr(
            "-# Prompt cut to its first {kept_tokens} tokens: the model's text encoder reads no more",
            kept_tokens=kept_tokens,
        )
    return tr("-# Prompt cut: it is longer than the model's text encoder reads")


# -- /describe ---------------------------------------------------------------------------------------------------------


def not_an_image(filename: str, content_type: str) -> str:
    """/describe with a file that is not an image."""
    kind = content_type or tr("of unknown type")
    return tr("/describe needs an image (PNG, JPEG or WebP); {filename} is {kind}.", filename=repr(filename), kind=kind)


def image_too_large(filename: str, size: int, limit: int) -> str:
    """/describe with an image over the download limit."""
    return tr(
        "/describe takes images up to {limit} MB; {filename} is {size} MB.",
        limit=f"{limit / 1e6:.0f}",
        filename=repr(filename),
        size=f"{size / 1e6:.1f}",
    )


def cannot_describe(model: str) -> str:
    """/describe on a model without an alignment scorer and candidate prompts."""
    return tr("model {model} cannot describe images: it has no image-text scorer and candidate prompts", model=model)


# -- /settings, /prefer ------------------------------------------------------------------------------------------------


def not_saved(reason: str) -> str:
    """A /settings or /prefer value that was refused."""
    return fit_content(tr("Not saved: {reason}", reason=reason))


def member_defaults(fields: dict[str, Any], options: int) -> str:
    """/settings: the member's defaults in one line (``options``: how many /prefer options they have)."""
    shown = ", ".join(f"{key}: `{escape(str(value)) or '-'}`" for key, value in fields.items())
    return fit_content(
        tr("Your defaults - {shown}, options: {options} (/prefer option list)", shown=shown, options=options)
    )


def member_options(options: tuple[tuple[str, str], ...], suffix: str) -> str:
    """/prefer: the member's options and suffix."""
    lines = [f"`--{name}` = `{escape(value)}`" for name, value in options] or [tr("No options saved.")]
    lines.append(tr("Suffix: `{suffix}`", suffix=escape(suffix)) if suffix else tr("No suffix."))
    return fit_content("\n".join(lines))


# -- /cancel, /info, /show, /record ------------------------------------------------------------------------------------


def not_yours(job_id: str) -> str:
    """/cancel of someone else's job."""
    return tr("Job `{job_id}` is not yours to cancel.", job_id=job_id)


def unknown_job(job_id: str) -> str:
    """/cancel, /show or /record of an id Redis does not know."""
    return tr("I don't know a job `{job_id}` (or it has expired).", job_id=escape_fitted(job_id, 100))


def cancel_outcome(job_id: str, outcome: str) -> str:
    """What ``shared.queue.client.request_cancel`` did, in words."""
    if outcome == "canceled":
        return tr("Job `{job_id}` was removed from the queue.", job_id=job_id)
    if outcome == "stopping":
        return tr("Job `{job_id}` is stopping at its next step.", job_id=job_id)
    return tr("Job `{job_id}` is not running or queued any more.", job_id=job_id)


def info_line(job_id: str, *, running: bool, progress: float, position: int | None, lane: str, prompt: str) -> str:
    """One job of /info."""
    queued = tr("queued, #{position}", position=position) if position else tr("queued")
    where = tr("running, {percent}%", percent=round(100 * progress)) if running else queued
    return f"`{job_id}` {where} ({lane}): {escape_fitted(prompt, 80)}"


def info(lines: list[str], totals: dict[str, int]) -> str:
    """/info: the member's jobs (``info_line`` each) and the totals."""
    body = [tr("**Your jobs**"), *(lines or [translate(_CONSTANTS["NO_ACTIVE_JOBS"])])]
    body.append(
        tr(
            "Queued in all lanes: {queued} - running: {running} - jobs you made: {made}",
            queued=totals.get("queued", 0),
            running=totals.get("running", 0),
            made=totals.get("made", 0),
        )
    )
    return fit_content("\n".join(body))


def record(data: dict[str, Any]) -> str:
    """A job's reproducibility record as a JSON code block, cut to fit one message. Backticks are written as JSON
    escapes, so a prompt cannot close the code block."""
    return _record_block(data, defaults.DISCORD_CONTENT_MAX)


def record_verified(data: dict[str, Any], verify: str) -> str:
    """``record`` followed by the verify line (``verify_line``), the record cut so that both fit one message."""
    verify = fit_content(verify, defaults.DISCORD_CONTENT_MAX // 2)
    return _record_block(data, defaults.DISCORD_CONTENT_MAX - len(verify) - 1) + "\n" + verify


RECORD_KEY_ORDER = ("job_id", "seeds", "size", "spec")
"""Top-level record keys shown first, so a record cut to fit one message still names the job, its seeds and prompt."""


def _record_block(data: dict[str, Any], limit: int) -> str:
    # Keys in RECORD_KEY_ORDER first, the rest (engine, worker, timings, ...) after, in the order they are stored; the
    # nested objects sort, so two records of one job read the same.
    ordered = {key: data[key] for key in RECORD_KEY_ORDER if key in data}
    ordered.update({key: value for key, value in data.items() if key not in ordered})
    text = (
        "{\n"
        + ",\n".join(
            f" {json.dumps(key)}: " + json.dumps(value, indent=1, sort_keys=True, default=str).replace("\n", "\n ")
            for key, value in ordered.items()
        )
        + "\n}"
    )
    text = text.replace("`", "\\u0060")
    room = limit - len("```json\n\n```") - len("\n... (cut)")
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
        if seconds < 55:
            return tr("~{seconds} s", seconds=max(10, round(seconds / 10) * 10))
        return tr("~{minutes} min", minutes=1)
    if seconds < 600:
        return tr("~{minutes} min", minutes=round(seconds / 60))
    minutes = round(seconds / 300) * 5
    if minutes < 60:
        return tr("~{minutes} min", minutes=minutes)
    if minutes % 60 == 0:
        return tr("~{hours} h", hours=minutes // 60)
    return tr("~{hours} h {minutes} min", hours=minutes // 60, minutes=minutes % 60)


def _with_prompt(prompt: str, rest: str) -> str:
    """ "**<prompt>**" + ``rest``: the prompt escaped and cut to what the line leaves of ``DISCORD_CONTENT_MAX`` (and to
    ``DISCORD_PROMPT_SHOWN_MAX``), so the line always fits."""
    room = min(defaults.DISCORD_PROMPT_SHOWN_MAX, defaults.DISCORD_CONTENT_MAX - len(rest) - 4)
    return f"**{escape_fitted(prompt, max(room, 1))}**{rest}"


def waiting_line(prompt: str, owner: str, position: int | None = None, eta_s: float | None = None) -> str:
    """ "**prompt** - <@user> (Waiting to start)", with the queue position and a rough ETA when known."""
    rest = " - " + tr("{who} (Waiting to start)", who=mention(owner))
    if position is not None and position > 0:
        rest += " - " + tr("#{position} in the queue", position=position)
    if eta_s is not None:
        rest += f" - {eta_text(eta_s)}"
    return _with_prompt(prompt, rest)


def waiting_unserved_line(prompt: str, owner: str, model: str, position: int | None = None) -> str:
    """The waiting message of a job whose model no live worker holds: it waits, in its place, for one that does."""
    rest = " - " + tr("{who} (Waiting to start)", who=mention(owner))
    if position is not None and position > 0:
        rest += " - " + tr("#{position} in the queue", position=position)
    rest += " - " + tr(
        "no worker holds the model {model} now; the job waits until one does", model=escape_fitted(model, 100)
    )
    return _with_prompt(prompt, rest)


def cli_unserved(model: str, job_id: str) -> str:
    """The CLI's note for a queued job whose model no live worker holds."""
    return tr(
        "no worker holds the model {model} now; job {job_id} waits until one does (WORKER_MODELS)",
        model=model,
        job_id=job_id,
    )


def workers_models(models: Sequence[str], families: Sequence[str], held: Sequence[str]) -> str:
    """/workers: what one worker serves (the models it takes jobs of, their families, the ones loaded now)."""
    if not models:
        return tr("serves no announced model")
    line = tr("serves {models}", models=", ".join(models))
    if families:
        line += f" ({', '.join(families)})"
    if held:
        line += ", " + tr("loaded: {models}", models=", ".join(held))
    return line


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


def result_line(
    prompt: str,
    owner: str,
    lane: str,
    kind: JobKind = JobKind.GRID,
    detail: str = "",
    *,
    footnotes: tuple[str, ...] = (),
    remixed: bool = False,
) -> str:
    """The final message's line: "**prompt** - <@user> (fast)"; upscales, variations, outpaints and inpaints say what
    they are; ``footnotes`` (``ignored_footnote``, ``truncated_footnote``) follow on their own lines, then the
    ``REMIXED_NOTE`` of a remixed job, and the prompt is cut to leave them room."""
    who = mention(owner)
    if kind is JobKind.INPAINT:
        what = translate(_CONSTANTS["LABEL_VARY_REGION_DONE"])
        rest = " - " + tr("{what} by {who} ({lane})", what=what, who=who, lane=lane)
    elif kind is JobKind.UPSCALE:
        mode = translate(detail.title()) if detail else tr("Subtle")
        rest = " - " + tr("Upscaled ({mode}) by {who} ({lane})", mode=mode, who=who, lane=lane)
    elif kind is JobKind.VARIATION:
        mode = translate(detail.title()) if detail else tr("Strong")
        rest = " - " + tr("Variations ({mode}) by {who} ({lane})", mode=mode, who=who, lane=lane)
    elif kind is JobKind.OUTPAINT:
        what = escape_fitted(detail, 100) or tr("Outpainted")
        rest = " - " + tr("{what} by {who} ({lane})", what=what, who=who, lane=lane)
    else:
        rest = f" - {who} ({lane})"
    tail = "".join("\n" + note for note in footnotes)
    if remixed:
        tail += "\n" + translate(_CONSTANTS["REMIXED_NOTE"])
    return _with_prompt(prompt, rest + tail)


def describe_text(owner: str, descriptions: list[tuple[str, float]]) -> str:
    """A /describe result: the candidate prompts, numbered as their buttons, best first; each prompt gets an equal
    share of the message."""
    head = tr("Prompts for the image of {who} (best match first):", who=mention(owner))
    room = (defaults.DISCORD_CONTENT_MAX - len(head)) // max(1, len(descriptions)) - len("\n**9** ")
    lines = [head] + [f"**{n}** {escape_fitted(text, room)}" for n, (text, _) in enumerate(descriptions, start=1)]
    return fit_content("\n".join(lines))


# -- button labels -----------------------------------------------------------------------------------------------------

LABEL_UPSCALE_SUBTLE = N_("Upscale (Subtle)")
"""Under an upscaled image."""
LABEL_UPSCALE_CREATIVE = N_("Upscale (Creative)")
"""Under an upscaled image."""
LABEL_VARY_SUBTLE = N_("Vary (Subtle)")
"""Under an upscaled image."""
LABEL_VARY_STRONG = N_("Vary (Strong)")
"""Under an upscaled image."""
LABEL_MAKE_SQUARE = N_("Make Square")
"""Under a non-square upscaled image."""


def label_zoom_out(factor: float) -> str:
    """ "Zoom Out 2x" (also what the result line of the zoomed job says)."""
    return tr("Zoom Out {factor}x", factor=f"{factor:g}")


def label_pan(direction: str) -> str:
    """ "Pan Left": what the result line of a pan says."""
    return tr("Pan {direction}", direction=translate(direction.title()))


# -- admin -------------------------------------------------------------------------------------------------------------

NOT_ADMIN = N_("Only the server's admins (Manage Server, or a configured admin role) can use this command.")
"""Reply to a member without rights who reached an admin command anyway."""

CANCELED_BY_ADMIN = N_("cancelled by an admin")
"""Reason shown on the waiting message of a job an admin removed from the queue."""

QUEUE_PAUSED = N_("Queue paused: running jobs finish, new jobs wait.")
"""/queue pause."""

QUEUE_RESUMED = N_("Queue resumed.")
"""/queue resume."""

NO_WORKERS = N_("No workers.")
"""/workers and /queue status without workers."""


def queue_cleared(count: int, lane: str) -> str:
    """/queue clear."""
    return tr("Removed {count} waiting job(s) from {lane}.", count=count, lane=lane or tr("all lanes"))


def admin_cancel_outcome(job_id: str, outcome: str) -> str:
    """/queue cancel."""
    if outcome == "canceled":
        return tr("Job `{job_id}` was removed from the queue.", job_id=job_id)
    if outcome == "stopping":
        return tr("Job `{job_id}` stops at its next step.", job_id=job_id)
    return tr("Job `{job_id}` is not queued or running.", job_id=job_id)


def purged(member: str, canceled: int, stopping: int) -> str:
    """/queue purge."""
    return tr(
        "Purged <@{member}>: {canceled} removed, {stopping} stopping.",
        member=member,
        canceled=canceled,
        stopping=stopping,
    )


def banned_member(member: str, reason: str) -> str:
    """/ban."""
    if reason:
        return tr("Banned <@{member}>: {reason}", member=member, reason=escape_fitted(reason, 300))
    return tr("Banned <@{member}>.", member=member)


def unbanned_member(member: str, was_banned: bool) -> str:
    """/unban."""
    return (
        tr("Unbanned <@{member}>.", member=member) if was_banned else tr("<@{member}> was not banned.", member=member)
    )


def limits_line(scope_name: str, running: int, queued: int) -> str:
    """One scope of /limits show, or the answer to /limits set."""
    return tr("{scope}: {running} running, {queued} queued", scope=scope_name, running=running, queued=queued)


def audit_copy(actor: str, text: str) -> str:
    """An admin action copied to the audit channel."""
    return fit_content(f"<@{actor}>: {text}")


def admin_text(lines: list[str]) -> str:
    """Any multi-line admin answer, fitted to one message."""
    return fit_content("\n".join(lines))


# -- Remix, Custom Zoom, Vary (Region) (bot/modals.py, bot/buttons.py) -------------------------------------------------

LABEL_VARY_REGION = N_("Vary (Region)")
"""Under an upscaled image: opens the web companion's mask editor."""

LABEL_CUSTOM_ZOOM = N_("Custom Zoom")
"""Under an upscaled image: a box with the prompt and ``--zoom``."""

MODAL_TITLE_REMIX = N_("Remix")
"""Title of the box that opens in Remix mode (at most 45 characters)."""

MODAL_TITLE_CUSTOM_ZOOM = N_("Custom Zoom")
"""Title of the Custom Zoom box."""

MODAL_LABEL_PROMPT = N_("Prompt")
"""Label of the prompt in the Remix and Custom Zoom boxes (at most 45 characters)."""

MODAL_LABEL_PROMPT_CUT = N_("Prompt (cut to fit 4,000 characters)")
"""Label of a prefilled prompt longer than a text box takes (at most 45 characters)."""

REMIXED_NOTE = N_("-# Remixed")
"""The footnote of a result whose prompt was edited in Remix mode (Discord's small text)."""

LABEL_VARY_REGION_DONE = N_("Vary (Region)")
"""What the result line of an inpaint job calls it."""

NO_WEB_COMPANION = N_("Vary (Region) needs the server's web companion, which is not set up here; ask the admins.")
"""A Vary (Region) click on a server without ``WEB_BASE_URL`` and ``WEB_SECRET``."""

REMIX_ON = N_("Remix mode is on: variation, re-roll, zoom and pan buttons first let you edit the prompt.")
"""/prefer remix turned it on."""

REMIX_OFF = N_("Remix mode is off.")
"""/prefer remix turned it off."""

STEALTH_ON = N_(
    "Stealth mode: your new results stay out of the shared gallery, and none of your results show there now."
)
"""/stealth."""

PUBLIC_ON = N_("Public mode: your new results appear in the server's shared gallery (those made in stealth never do).")
"""/public."""


def region_link(url: str, ttl_s: int) -> str:
    """The private answer to a Vary (Region) click: the editor's link and how long it works."""
    return tr(
        "Paint the region to repaint in the editor: <{url}> (only for you, valid {ttl}).", url=url, ttl=kept_for(ttl_s)
    )


def remix_prompt_cut(kept: int) -> str:
    """A note that a prefilled prompt was cut to the text box's ``kept`` characters."""
    return tr("the prompt was cut to {kept} characters to fit the box", kept=kept)


# -- the web companion (web/) ------------------------------------------------------------------------------------------

MASK_NOT_PNG = N_("The mask must be a PNG image painted in the editor.")
"""A region submit whose mask is not a readable PNG."""

MASK_EMPTY = N_("Nothing was painted: paint the region to repaint, then submit.")
"""A region submit with an empty mask."""


def mask_wrong_size(size: tuple[int, int], expected: tuple[int, int]) -> str:
    """A region submit whose mask is not the image's size."""
    return tr(
        "The mask is {width}x{height} pixels; it must be the image's {expected_width}x{expected_height}.",
        width=size[0],
        height=size[1],
        expected_width=expected[0],
        expected_height=expected[1],
    )


def mask_too_large(limit: int) -> str:
    """A region submit whose mask is over the size limit."""
    return tr("The mask is larger than {megabytes} MB.", megabytes=limit // (1024 * 1024))


LINK_FORGED = N_("This link is not valid: it was changed or was not made by this server.")
"""A tampered or forged signed link (or session)."""

LINK_EXPIRED = N_("This link has expired: click Vary (Region) under the image again for a new one.")
"""A region link past its lifetime."""

LINK_NOT_YOURS = N_("This link was made for another member: click Vary (Region) yourself to get your own.")
"""A region link opened by a member it was not made for."""

LINK_USED = N_("This link was already used: click Vary (Region) under the image again to repaint another region.")
"""A region link submitted a second time."""

LOGIN_FAILED = N_("Logging in with Discord did not work; please try again.")
"""The OAuth2 callback with a wrong state, a refused code, or Discord unreachable."""

CSRF_FAILED = N_("This form has expired or did not come from this site; reload the page and try again.")
"""A POST without the session's CSRF token."""

JOB_NOT_VISIBLE = N_("There is no such job, or its member keeps it private.")
"""A job page of a job the viewer may not see (the same words for both, so private jobs cannot be probed)."""

WEB_NOT_ADMIN = N_("Only the server's admins (Manage Server, or a configured admin role or user) can see the queue.")
"""The admin page for a member without admin rights."""

NO_IMAGES = N_("No images yet: make some with /imagine in Discord.")
"""An empty "My images" page."""

NO_MATCHES = N_("No images match that search.")
"""A search with no results."""


_JOB_STATUS = {
    "queued": N_("queued"),
    "started": N_("running"),
    "finished": N_("finished"),
    "failed": N_("failed"),
    "canceled": N_("canceled"),
}


def job_status(status: str) -> str:
    """A job's status (a ``JobStatus`` value) as members read it: "started" reads "running"."""
    return translate(_JOB_STATUS.get(status, status))


def region_submitted(job_id: str) -> str:
    """The page after a region submit: the job is queued and where its result goes."""
    return tr(
        "Job {job_id} is queued: the repainted images appear in Discord and on this site when they are done.",
        job_id=job_id,
    )


# -- server rules (shared/rules.py) ------------------------------------------------------------------------------------


def rule_refused(rule: str, what: str, allowed: str) -> str:
    """A prompt or follow-up that a server rule does not allow: the rule's name, what was asked, what is allowed."""
    return fit_content(
        tr(
            'Not allowed by the rule "{rule}": {what}. Allowed: {allowed}.',
            rule=escape_fitted(rule, 100),
            what=what,
            allowed=allowed,
        )
    )


def rule_model(model: str) -> str:
    """What was asked: a model (a ``--v`` alias, or ``default``)."""
    return tr("model `{model}`", model=escape_fitted(model, 40))


def rule_models(models: tuple[str, ...]) -> str:
    """What is allowed: these models."""
    return tr("models {models}", models=", ".join(f"`{escape_fitted(m, 40)}`" for m in models))


def rule_loras_asked(names: tuple[str, ...]) -> str:
    """What was asked: LoRAs (the ones the rule does not allow)."""
    return ntr("LoRA {names}", "LoRAs {names}", len(names), names=", ".join(f"`{escape_fitted(n, 40)}`" for n in names))


def rule_loras(names: tuple[str, ...]) -> str:
    """What is allowed: these LoRAs (none at all when the rule names only ``none``)."""
    if not names:
        return tr("no LoRA")
    return tr("LoRAs {names}", names=", ".join(f"`{escape_fitted(n, 40)}`" for n in names))


def rule_lane(lane: str) -> str:
    """What was asked: a lane."""
    return tr("the {lane} lane", lane=escape_fitted(lane, 40))


def rule_lanes(lanes: tuple[str, ...]) -> str:
    """What is allowed: these lanes."""
    return tr("lanes {lanes}", lanes=", ".join(escape_fitted(lane, 40) for lane in lanes))


def rule_quality(quality: float) -> str:
    """What was asked: a ``--quality``."""
    return tr("--quality {value}", value=f"{quality:g}")


def rule_max_quality(quality: float) -> str:
    """What is allowed: ``--quality`` up to a value."""
    return tr("--quality up to {value}", value=f"{quality:g}")


def rule_repeat(repeat: int) -> str:
    """What was asked: a ``--repeat``."""
    return tr("--repeat {value}", value=repeat)


def rule_max_repeat(repeat: int) -> str:
    """What is allowed: ``--repeat`` up to a value."""
    return tr("--repeat up to {value}", value=repeat)


def rule_size(width: int, height: int) -> str:
    """What was asked: images of a size."""
    return tr("{width}x{height} images", width=width, height=height)


def rule_max_pixels(pixels: int) -> str:
    """What is allowed: images of at most so many pixels."""
    return tr("images of at most {pixels} pixels", pixels=pixels)


NO_RULES = N_("No rules: everyone may use every model, LoRA, lane, quality and size, everywhere.")
"""/rules show without any rule."""


def rule_line(scope: str, rule: dict[str, Any]) -> str:
    """One rule of /rules show, or the answer to /rules set: its scope (a mention) and its fields."""

    def text(value: Any) -> str:
        return ", ".join(str(item) for item in value) if isinstance(value, list | tuple) else str(value)

    shown = ", ".join(f"{key}: `{escape_fitted(text(value), 200)}`" for key, value in rule.items()) or tr("no limits")
    return tr("{scope} - {fields}", scope=scope, fields=shown)


def rule_cleared(scope: str, removed: bool) -> str:
    """/rules clear."""
    if removed:
        return tr("Rule of {scope} removed.", scope=scope)
    return tr("{scope} had no rule.", scope=scope)


EVERYONE = N_("everyone")
"""The ``default`` scope, as admin answers name it."""


# -- allowances (shared/allowances.py, /quota) -------------------------------------------------------------------------


def reset_time(reset_at: float) -> str:
    """When an allowance resets, as Discord shows it in each reader's own time zone: "at 00:00 (in 5 hours)"."""
    stamp = int(reset_at)
    return f"<t:{stamp}:t> (<t:{stamp}:R>)"


def allowance_spent(used: str, reset_at: float, relax_lane: str = "") -> str:
    """/imagine refused at zero: what is used up, when it resets, and the relax lane when its jobs do not count."""
    text = tr("You have used today's allowance ({used}); it resets {when}.", used=used, when=reset_time(reset_at))
    if relax_lane:
        text += " " + tr("Jobs in the {lane} lane don't count: add --{lane} to your prompt.", lane=relax_lane)
    return fit_content(text)


def allowance_jobs(used: int, allowed: int) -> str:
    """Jobs used of the daily allowance: "10 of 10 jobs"."""
    return tr("{used} of {allowed} jobs", used=used, allowed=allowed)


def allowance_gpu(used: float, allowed: float) -> str:
    """GPU time used of the daily allowance: "612 of 600 GPU-seconds"."""
    return tr("{used} of {allowed} GPU-seconds", used=f"{used:.0f}", allowed=f"{allowed:.0f}")


def quota(
    owner: str,
    *,
    jobs: tuple[int, int] | None,
    gpu: tuple[float, float] | None,
    reset_at: float,
    exempt_lanes: tuple[str, ...],
) -> str:
    """/quota: what is left of a member's daily allowance and when it resets (``jobs``/``gpu``: used and allowed,
    None where no cap applies)."""
    lines = [tr("**Daily allowance of {who}**", who=mention(owner))]
    if jobs is None and gpu is None:
        lines.append(tr("No daily allowance applies: the queue limits are the only ones."))
    if jobs is not None:
        used, allowed = jobs
        lines.append(
            tr("Jobs: {left} left ({used} of {allowed} used)", left=max(0, allowed - used), used=used, allowed=allowed)
        )
    if gpu is not None:
        used_s, allowed_s = gpu
        lines.append(
            tr(
                "GPU time: {left} s left ({used} of {allowed} s used)",
                left=f"{max(0.0, allowed_s - used_s):.0f}",
                used=f"{used_s:.0f}",
                allowed=f"{allowed_s:.0f}",
            )
        )
    lines.append(tr("Resets {when}", when=reset_time(reset_at)))
    if exempt_lanes and (jobs is not None or gpu is not None):
        lines.append(tr("Jobs in these lanes don't count: {lanes}", lanes=", ".join(exempt_lanes)))
    return fit_content("\n".join(lines))


def quota_reset(owner: str) -> str:
    """/quota reset."""
    return tr("Allowance of {who} reset: today's counts start again from zero.", who=mention(owner))


NOT_YOUR_QUOTA = N_("Only admins can see or reset another member's allowance.")
"""/quota for someone else by a member who is not an admin."""


# -- the review queue (shared/review.py) -------------------------------------------------------------------------------

HELD_FOR_REVIEW = N_("held for review by the server's moderators")
"""The waiting message's last words while a result waits for a moderator."""

REJECTED = N_("rejected by the server's moderators")
"""The waiting message's last words when a moderator rejects the result."""

NOT_MODERATOR = N_("Only the server's moderators can approve or reject results.")
"""Approve/Reject clicked by someone else."""

LABEL_APPROVE = N_("Approve")
"""Button under a result held for review."""

LABEL_REJECT = N_("Reject")
"""Button under a result held for review."""


def review_post(job_id: str, owner: str, channel_id: str, reason: str) -> str:
    """The staff channel's message about a result held for review."""
    where = f"<#{channel_id}>" if channel_id.isdigit() else "-"
    return fit_content(
        tr(
            "Held for review: job `{job_id}` by {who} for {where} ({reason}). Approve delivers it to the member.",
            job_id=job_id,
            who=mention(owner),
            where=where,
            reason=escape_fitted(reason, 300),
        )
    )


def review_reason_flagged(score: float) -> str:
    """Why a result was held: image moderation flagged it."""
    return tr("image moderation score {score}", score=f"{score:.2f}")


REVIEW_REASON_NEW_MEMBER = N_("results of new members are reviewed")
"""Why a result was held: its member joined recently."""


def review_decided(job_id: str, moderator: str, approved: bool) -> str:
    """The staff message once a moderator decided."""
    if approved:
        return tr("Job `{job_id}` approved by {who} and delivered.", job_id=job_id, who=mention(moderator))
    return tr("Job `{job_id}` rejected by {who}; the member was told.", job_id=job_id, who=mention(moderator))


def review_already(job_id: str, state: str) -> str:
    """A click on a result that was decided already (or is being delivered)."""
    if state == "approved":
        return tr("Job `{job_id}` was approved and delivered already.", job_id=job_id)
    if state == "rejected":
        return tr("Job `{job_id}` was rejected already.", job_id=job_id)
    if state == "delivering":
        return tr("Job `{job_id}` is being delivered right now.", job_id=job_id)
    return tr("Job `{job_id}` is not waiting for review.", job_id=job_id)


# -- provenance (shared/provenance.py) ---------------------------------------------------------------------------------


def verify_line(provenance: dict[str, Any]) -> str:
    """How a member can prove an image's origin: what the PNG carries, the C2PA signer if any, and the hash."""
    parts = [
        tr(
            "Verify: the PNG carries this record (text chunk `imagine:record`) "
            "and the IPTC source type trainedAlgorithmicMedia"
        )
    ]
    signer = provenance.get("c2pa_signer")
    if signer:
        parts.append(
            tr(
                "a C2PA manifest signed by {signer} (check it with any C2PA verifier)",
                signer=escape_fitted(str(signer), 100),
            )
        )
    digest = provenance.get("sha256")
    if digest:
        parts.append(tr("sha256 of the posted image: `{digest}`", digest=str(digest)[:64]))
    return "; ".join(parts) + "."


_WORDS = (N_("Subtle"), N_("Strong"), N_("Creative"), N_("Left"), N_("Right"), N_("Up"), N_("Down"))
"""Words that reach templates as values (upscale and variation modes, pan directions), listed for the catalogue."""


# -- translated constants ----------------------------------------------------------------------------------------------
# The sentences above written as constants (QUEUE_DOWN, LABEL_MAKE_SQUARE, ...) are moved out of the module's
# namespace into ``_CONSTANTS``, so that reading ``messages.QUEUE_DOWN`` goes through ``__getattr__`` (PEP 562) and
# returns the sentence in the locale in force at that moment. Type checkers still see the declarations above.
_CONSTANTS: dict[str, str] = {
    name: value
    for name, value in globals().items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}
for _name in _CONSTANTS:
    del globals()[_name]


def __getattr__(name: str) -> str:
    """``messages.<CONSTANT>`` in the member's language (English when no catalogue has it)."""
    try:
        template = _CONSTANTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return translate(template)


# -- LoRAs, references, --draft, personalization, /blend, /shorten (issue 17) -----------------------------------------


def unknown_lora(name: str, known: list[str]) -> str:
    """``--lora`` with a name the configuration does not list."""
    listed = ", ".join(known[:20]) if known else tr("none are configured here")
    return tr(
        "--lora: unknown LoRA {name!r}; LoRAs here: {listed} (see /loras)", name=escape_fitted(name, 64), listed=listed
    )


def lora_wrong_family(name: str, families: tuple[str, ...], model: str, family: str) -> str:
    """``--lora`` with a LoRA made for another family than the job's model."""
    return tr(
        "--lora {name} fits {families} models; model {model} is {family} (see /loras for the ones that fit)",
        name=name,
        families=", ".join(families),
        model=escape_fitted(model, 100),
        family=family or tr("of a family that cannot be told"),
    )


def lora_weight_out_of_range(name: str, weight: float) -> str:
    """``--lora name:weight`` outside the allowed range."""
    return tr(
        "--lora {name}:{weight}: the weight must be from {low} to {high}",
        name=name,
        weight=f"{weight:g}",
        low=f"{defaults.LORA_WEIGHT_MIN:g}",
        high=f"{defaults.LORA_WEIGHT_MAX:g}",
    )


def too_many_loras(count: int, most: int) -> str:
    """More ``--lora`` items than the configured count."""
    return tr("--lora: at most {most} LoRA(s) per prompt here, got {count}", most=most, count=count)


def no_reference_adapter(what: str, model: str, family_has_loader: bool) -> str:
    """A reference (``--sref``, ``--cref``, ``--oref``, ``--p``, /blend) on a model without an image adapter."""
    why = (
        tr("no IP-Adapter is configured for it")
        if family_has_loader
        else tr("its family has no image adapter here (IP-Adapters are served for SD 1.x, SDXL and FLUX.1)")
    )
    return tr(
        "{what} needs an image adapter, and model {model} has none: {why}",
        what=what,
        model=escape_fitted(model, 100),
        why=why,
    )


def niji_style_needs_niji(style: str) -> str:
    """A niji ``--style`` without ``--niji``."""
    return tr("--style {style} is a niji style: use it with --niji (or --style raw with other versions)", style=style)


def no_profile(member_given: bool) -> str:
    """``--p`` without a profile (the member's own, or an unknown code)."""
    if member_given:
        return tr("--p: that profile code is unknown here (ask its owner for the code /settings shows them)")
    return tr("--p: you have no profile yet; react with a star (⭐) to results you like, then use --p")


def empty_profile(code: str) -> str:
    """``--p <code>`` whose profile has no liked images (cleared since)."""
    return tr("--p {code}: that profile has no liked images any more", code=code)


def parser_notes(notes: list[str]) -> str:
    """What the parser changed in a prompt (e.g. an off-list --quality rounded), told privately."""
    return fit_content(tr("Note: {notes}", notes=" ".join(escape(note) for note in notes)))


def reference_unavailable(kind: str, model: str) -> str:
    """A worker asked for a reference its model cannot take (the configuration changed since the job was queued)."""
    return tr("model {model} has no image adapter for this {kind} reference here any more", model=model, kind=kind)


def reference_image_missing(kind: str) -> str:
    """A reference none of whose images could be read (every URL refused or gone)."""
    return tr("none of the {kind} reference images could be used", kind=kind)


def profile_images_gone(count: int) -> str:
    """A profile whose liked images have all expired from the result store before they were embedded."""
    return tr(
        "the {count} image(s) of that profile are no longer stored; like some new results with a star", count=count
    )


LABEL_ENHANCE = N_("Enhance")
"""Under a --draft grid: the same seeds at full quality."""


def profile_line(count: int, code: str) -> str:
    """/settings: the member's personalization profile."""
    if not count:
        return tr("Profile (--p): none yet; react with a star (⭐) to results you like.")
    return tr("Profile (--p): {count} liked image(s); share it as `--p {code}`.", count=count, code=code)


def with_profile(defaults_line: str, profile: str) -> str:
    """/settings: the defaults line (``member_defaults``) and the profile line (``profile_line``) in one message."""
    return fit_content(f"{defaults_line}\n{profile}")


def profile_cleared(count: int) -> str:
    """/settings clear_profile."""
    return tr("Your profile is cleared ({count} liked image(s) forgotten).", count=count)


def loras_list(entries: list[tuple[str, tuple[str, ...], float, tuple[str, ...], str]], most: int) -> str:
    """/loras: name, families, default weight, triggers and description of each configured LoRA."""
    if not entries:
        return tr("No LoRAs are configured here.")
    lines = [tr("**LoRAs** (`--lora name` or `--lora name:0.8`; at most {most} per prompt)", most=most)]
    for name, families, weight, triggers, description in entries:
        line = tr(
            "`{name}` ({families}; weight {weight})", name=name, families=", ".join(families), weight=f"{weight:g}"
        )
        if triggers:
            line += " " + tr("adds: {triggers}", triggers=escape_fitted(", ".join(triggers), 100))
        if description:
            line += f" - {escape_fitted(description, 120)}"
        lines.append(line)
    return fit_content("\n".join(lines))


def blend_prompt(names: list[str], dimensions: str) -> str:
    """The prompt line of a /blend job: what it blends."""
    return tr("/blend of {names} ({dimensions})", names=", ".join(names), dimensions=dimensions)


def blend_needs_images(count: int) -> str:
    """/blend with too few or too many images."""
    return tr("/blend takes 2 to {most} images, got {count}", most=defaults.MAX_REFERENCE_IMAGES, count=count)


def attachment_not_image(option: str, filename: str, content_type: str) -> str:
    """An attachment option (sref, cref, oref, /blend's images) that is not an image."""
    return tr(
        "{option} needs an image (PNG, JPEG or WebP); {filename!r} is {content_type}.",
        option=option,
        filename=filename,
        content_type=content_type or tr("of unknown type"),
    )


def attachment_too_large(option: str, filename: str, size: int, limit: int) -> str:
    """An attachment option over the download limit."""
    return tr(
        "{option} takes images up to {limit} MB; {filename!r} is {size} MB.",
        option=option,
        limit=f"{limit / 1e6:.0f}",
        filename=filename,
        size=f"{size / 1e6:.1f}",
    )


def shorten_weighted() -> str:
    """/shorten of a multi-prompt."""
    return tr("/shorten takes one prompt without :: weights")


def shorten_text(owner: str, marked: list[tuple[str, str]], options: list[str]) -> str:
    """A /shorten result: the prompt with each word marked (``bold``, ``strike`` or ``plain``), then the shorter
    prompts numbered as their buttons. Member text is escaped first and each part gets its share of the message."""
    head = tr(
        "Shortened prompts for {who} (**bold**: carries weight, ~~struck~~: filler):",
        who=mention(owner),
    )
    budget = defaults.DISCORD_CONTENT_MAX - len(head) - 2
    mark_room = budget // 2
    words: list[str] = []
    used = 0
    for word, kind in marked:
        shown = escape(word)
        shown = f"**{shown}**" if kind == "bold" else f"~~{shown}~~" if kind == "strike" else shown
        if used + len(shown) + 1 > mark_room - len(" …"):
            words.append("…")
            break
        words.append(shown)
        used += len(shown) + 1
    lines = [head, " ".join(words)]
    room = (budget - mark_room) // max(1, len(options)) - len("\n**9** ")
    lines += [f"**{n}** {escape_fitted(text, max(room, 8))}" for n, text in enumerate(options, start=1)]
    return fit_content("\n".join(lines))


def cannot_shorten(model: str) -> str:
    """/shorten on a model whose text encoder cannot weigh words."""
    return tr("model {model} cannot weigh the words of a prompt", model=model)
