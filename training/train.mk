# Training of the shipped model (models/imagine-shapes); included by the top-level Makefile.
# `make train-model` replays the recipe of the shipped weights (three seeded phases, see docs/model-card.md): two of
# about 4 min each on one H200 (TRAIN_DEVICE=cuda), then 1,931 steps of batch 32 on a CPU (about 1 h on 2 idle
# cores). `make evaluate-model` prints the model card's table (5-10 min on 2 CPU cores).

TRAIN_PYTHON ?= .venv/bin/python
TRAIN_DEVICE ?= cuda
TRAIN_RUNS ?= runs
MODEL_OUT ?= models/imagine-shapes
TRAIN_SECONDS ?= 600
TRAIN_WORKERS ?= 8

.PHONY: train-model train-more evaluate-model

train-model:
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-phase1 \
		--device $(TRAIN_DEVICE) --steps 1400 --batch 256 --lr 5e-4 --warmup 200 --seed 0
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes \
		--device $(TRAIN_DEVICE) --steps 1478 --batch 256 --lr 4e-4 --warmup 100 --seed 1 \
		--init-from $(TRAIN_RUNS)/imagine-shapes-phase1
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-phase3 \
		--device cpu --steps 3655 --stop-after 1931 --batch 32 --lr 2e-4 --warmup 50 --seed 2 \
		--init-from $(TRAIN_RUNS)/imagine-shapes
	mkdir -p $(MODEL_OUT) && cp -r $(TRAIN_RUNS)/imagine-shapes-phase3/. $(MODEL_OUT)/

# Continue training the shipped model for TRAIN_SECONDS on a GPU: batches of 2048 made by TRAIN_WORKERS DataLoader
# processes (the first recipe, batch 256, was bound by per-step overhead, not by the GPU; docs/model-card.md, "Next run").
# Writes $(TRAIN_RUNS)/imagine-shapes-more (checkpoints every minute); copy it over MODEL_OUT once it evaluates better.
train-more:
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-more \
		--device $(TRAIN_DEVICE) --init-from $(MODEL_OUT) --batch 2048 --lr 8e-4 --warmup 200 --seed 3 \
		--workers $(TRAIN_WORKERS) --steps 100000 --max-seconds $(TRAIN_SECONDS) --checkpoint-every-s 60

evaluate-model:
	$(TRAIN_PYTHON) bench/adherence.py --model $(MODEL_OUT)
