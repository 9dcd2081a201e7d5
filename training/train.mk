# Training of the shipped model (models/imagine-shapes); included by the top-level Makefile.
# `make train-model` replays the recipe of the shipped weights (four seeded phases, see docs/model-card.md): two of
# about 4 min each on one H200 (TRAIN_DEVICE=cuda), 1,931 steps of batch 32 on a CPU (about 1 h on 2 idle cores),
# then 8 min on the H200 with batches of 2,048. Phase 4 had its step count chosen by --max-seconds; replayed with
# fixed --steps, the learning rates of its first 60 steps differ by under 0.4%. GPU runs are not bit-for-bit repeatable (cuDNN autotuning, atomics).
# `make evaluate-model` prints the model card's table (about 10 min on 2 CPU cores).

TRAIN_PYTHON ?= .venv/bin/python
TRAIN_DEVICE ?= cuda
TRAIN_RUNS ?= runs
MODEL_OUT ?= models/imagine-shapes
TRAIN_SECONDS ?= 600
TRAIN_WORKERS ?= 12

.PHONY: train-model train-more evaluate-model

train-model:
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-phase1 \
		--device $(TRAIN_DEVICE) --steps 1400 --batch 256 --lr 5e-4 --warmup 200 --seed 0
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-phase2 \
		--device $(TRAIN_DEVICE) --steps 1478 --batch 256 --lr 4e-4 --warmup 100 --seed 1 \
		--init-from $(TRAIN_RUNS)/imagine-shapes-phase1
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-phase3 \
		--device cpu --steps 3655 --stop-after 1931 --batch 32 --lr 2e-4 --warmup 50 --seed 2 \
		--init-from $(TRAIN_RUNS)/imagine-shapes-phase2
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-phase4 \
		--device $(TRAIN_DEVICE) --steps 1550 --batch 2048 --lr 8e-4 --warmup 200 --ema-decay 0.995 --seed 3 \
		--workers 12 --init-from $(TRAIN_RUNS)/imagine-shapes-phase3
	mkdir -p $(MODEL_OUT) && cp -r $(TRAIN_RUNS)/imagine-shapes-phase4/. $(MODEL_OUT)/

# Continue training the shipped model for TRAIN_SECONDS on a GPU (prepared, not run): batches of 2,048 from
# TRAIN_WORKERS DataLoader processes; --coords gives the UNet pixel coordinates (worker/coord_unet.py, zero-initialised,
# at 5x the learning rate) for regions and relations; 10% multi-prompt blends and 25% bare-phrase captions together
# (blends alone taught the model that a short phrase means two objects; docs/model-card.md, "Multi-prompt blends").
# Writes $(TRAIN_RUNS)/imagine-shapes-more (checkpoints every minute); copy it over MODEL_OUT only once
# `make evaluate-model MODEL_OUT=...` shows it better.
train-more:
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-more \
		--device $(TRAIN_DEVICE) --init-from $(MODEL_OUT) --coords --coord-lr-scale 5 --batch 2048 --lr 4e-4 \
		--warmup 100 --ema-decay 0.995 --blend-share 0.1 --phrase-share 0.25 --seed 7 --workers $(TRAIN_WORKERS) \
		--steps 100000 --max-seconds $(TRAIN_SECONDS) --checkpoint-every-s 60

evaluate-model:
	$(TRAIN_PYTHON) -m bench.adherence --model $(MODEL_OUT)
