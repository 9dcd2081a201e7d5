"""Discord's wire format without discord.py: button ``custom_id``s, component JSON and Discord's size limits."""
