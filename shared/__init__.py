"""The contract between the Discord front end and the GPU workers.

Nothing here imports discord, torch or diffusers: both sides import this package.
"""
