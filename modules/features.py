"""Feature names shared by ingestion, Transform, Trainer, SMOTE and serving."""

IMAGE = "image"
MASK = "mask"
LABEL = "label"
MODALITY = "modality"
DATASET = "dataset"
IMAGE_ID = "image_id"
GROUP_ID = "group_id"
HAS_MASK = "has_mask"

# Transformed features that are not model inputs but are kept for TFMA slicing.
SLICE_FEATURES = (MODALITY, DATASET, HAS_MASK)
