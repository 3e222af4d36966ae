"""Module files loaded by the TFX components (Transform, Trainer) and the SMOTE component."""
