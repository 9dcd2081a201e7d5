"""The one kind of error a member may see: ``MemberFacingError`` and its subclasses.

Front ends and workers show ``str(error)`` of these to the member as it is; every other exception becomes the generic
``messages.INTERNAL_ERROR`` (bot) or ``messages.job_internal_error`` (worker) and a log line with the job id and the
traceback, so a library's ``ValueError`` text never reaches a member. Each subclass's message is written in
``shared.messages`` (member-facing sentences live there), named after the parameter or value at fault.

Not ``ValueError`` subclasses on purpose: code that catches ``ValueError`` (a library's, or our own argument checks)
must not be able to mistake it for something to show.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class MemberFacingError(Exception):
    """An error whose message is written for the member (short, specific, safe to show)."""


class PromptError(MemberFacingError):
    """A prompt (or a parameter in it) that cannot be read or is not allowed; names the parameter, the value and what
    is allowed."""


class LimitExceeded(MemberFacingError):
    """A member has as many jobs queued as they may."""


class MemberBanned(MemberFacingError):
    """A banned member tried to submit."""


class ResultExpired(MemberFacingError, LookupError):
    """A result (image or record) that a button or command needs is no longer stored."""


class FetchRefused(MemberFacingError):
    """An image URL (prompt image, attachment) that was not fetched, with the reason."""


class CannotFollowUp(MemberFacingError):
    """A button whose job cannot be made from its source (e.g. Make Square of a square image)."""


class SettingRefused(MemberFacingError):
    """A /settings or /prefer value that cannot be saved; names the field, the value and what is allowed."""


class JobRefused(MemberFacingError):
    """A job a worker will not run as asked (e.g. made for a model this worker does not serve)."""


class ModelUnavailable(MemberFacingError):
    """A model the configuration names that this worker could not load (the cause is in the worker's log)."""


class RuleRefused(PromptError):
    """A prompt or follow-up that the server's rules (``shared.rules``) do not allow here or for this member; names
    the rule and what is allowed."""


class AllowanceSpent(MemberFacingError):
    """A member whose daily allowance (``shared.allowances``) is used up; says when it resets."""


class ModelNotSupported(ModelUnavailable):
    """A model whose pipeline class no family of the engine handles (an expected failure: one line, no traceback)."""


class Unsupported(MemberFacingError):
    """A feature the job's model cannot do (the member is told which and why, instead of a failing job)."""
