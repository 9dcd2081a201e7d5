"""``python -m worker`` / ``imagine-worker``: serve imagine-bot jobs with a resident model."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from shared import messages
from shared.errors import ModelNotSupported
from shared.families import UnknownFamily
from shared.model_info import model_family
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

EXIT_MODEL_NOT_SUPPORTED = 3
"""Exit status of a worker whose configured model has a pipeline class no engine family handles."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="imagine-worker", description="Serve imagine-bot jobs from Redis.")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--lanes", default="", help="comma-separated lanes to serve (default: all, by priority)")
    parser.add_argument("--gpus", default="", help="'all' starts one worker process per visible GPU")
    parser.add_argument("--name", default="", help="worker name (default: host and pid)")
    parser.add_argument("--name-suffix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"), help="default: LOG_LEVEL or INFO")
    return parser.parse_args(argv)


def unsupported_model(settings: Settings) -> str:
    """Why the configured model cannot be served, read from its ``model_index.json`` without torch (so the worker
    says so before importing diffusers), or "" when its family is known or cannot be read without loading it."""
    try:
        model_family(settings.resolve_model(None))
    except UnknownFamily as exc:
        return messages.model_not_supported(settings.model, str(exc))
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.gpus:
        from worker.runner import run_per_gpu, visible_gpus

        if args.gpus != "all":
            raise SystemExit(f"--gpus takes 'all', got {args.gpus!r}")
        child_args = ["--log-level", args.log_level]
        if args.burst:
            child_args.append("--burst")
        if args.lanes:
            child_args += ["--lanes", args.lanes]
        if args.name:
            child_args += ["--name", args.name]
        return run_per_gpu(child_args, visible_gpus())
    settings = get_settings()
    refusal = unsupported_model(settings)
    if refusal:  # an expected misconfiguration: one line naming the class and the supported families
        print(f"imagine-worker: {refusal}", file=sys.stderr, flush=True)
        return EXIT_MODEL_NOT_SUPPORTED
    from worker.runner import run_worker  # torch and diffusers: imported after the checks that need neither

    lanes = [lane.strip() for lane in args.lanes.split(",") if lane.strip()]
    name = args.name or None
    if args.name_suffix:
        name = f"{name or socket.gethostname()}-{os.getpid()}-{args.name_suffix}"
    try:
        return run_worker(settings, burst=args.burst, lanes=lanes, name=name)
    except ModelNotSupported as exc:  # an expected misconfiguration: one line naming the class, no traceback
        print(f"imagine-worker: {exc}", file=sys.stderr, flush=True)
        return EXIT_MODEL_NOT_SUPPORTED


if __name__ == "__main__":
    raise SystemExit(main())
