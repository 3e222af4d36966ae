"""The lesion segmenter: its network and ROI post-processing (network.py), its Trainer
module (trainer.py), the component that gives the classifier predicted-ROI training images
(predicted_roi.py) and the one that measures and gates it on the test split (evaluation.py).
Import the components from their modules: network.py must stay importable without TFX."""
