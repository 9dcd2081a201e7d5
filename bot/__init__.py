"""The Discord front end: slash commands and persistent result buttons that enqueue jobs for the workers."""
