"""The web companion: each member's images and the shared gallery, job pages, the admin queue page, and the Vary
(Region) mask editor; login with Discord OAuth2. A front end like the bot: it goes through ``shared/`` (the intake,
the queue, the result store and its gallery index) and never imports torch, diffusers or the worker."""
