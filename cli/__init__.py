"""``imagine``: the command-line front end (no Discord), beside the bot."""
