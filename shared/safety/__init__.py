"""Input safety: prompt moderation and the safe fetching of image URLs."""
