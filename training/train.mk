# Training of the shipped model (models/imagine-shapes); included by the top-level Makefile.
# `make train-model` replays the recipe of the shipped weights (two seeded phases, see docs/model-card.md):
# about 4 min on one H200 (TRAIN_DEVICE=cuda); on a CPU it works but takes days. `make evaluate-model` prints the
# model card's table (5-10 min on 2 CPU cores).

TRAIN_PYTHON ?= .venv/bin/python
TRAIN_DEVICE ?= cuda
TRAIN_RUNS ?= runs
MODEL_OUT ?= models/imagine-shapes

.PHONY: train-model evaluate-model

train-model:
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes-phase1 \
		--device $(TRAIN_DEVICE) --steps 1400 --batch 256 --lr 5e-4 --warmup 200 --seed 0
	PYTHONUNBUFFERED=1 $(TRAIN_PYTHON) -m training.train --out $(TRAIN_RUNS)/imagine-shapes \
		--device $(TRAIN_DEVICE) --steps 1478 --batch 256 --lr 4e-4 --warmup 100 --seed 1 \
		--init-from $(TRAIN_RUNS)/imagine-shapes-phase1
	mkdir -p $(MODEL_OUT) && cp -r $(TRAIN_RUNS)/imagine-shapes/. $(MODEL_OUT)/

evaluate-model:
	$(TRAIN_PYTHON) bench/adherence.py --model $(MODEL_OUT)
