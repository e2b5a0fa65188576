"""The metric keys that several rooms read: written by the measures (gptfit/measures/) and the run, read by the
report, the page and the plots. Each is spelled here once; a key read by one room alone stays with it.
"""

STEP = "step"
TOKENS_SEEN = "tokens_seen"
EPOCH = "epoch"
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_BPB = "val/bpb"
GAP = "gap"
EXTRACTION_TRAIN = "mem/extraction_rate_train"
MIA_AUC = "mem/mia_auc"  # the loss score's AUC (mia/loss/auc), the headline figure
