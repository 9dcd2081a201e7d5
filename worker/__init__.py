"""GPU workers: RQ workers that keep a diffusers pipeline resident and run imagine-bot jobs."""
