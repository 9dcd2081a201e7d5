"""The Midjourney prompt language: parsing (``parser``) and the mapping of parameters to generation (``resolve``)."""
