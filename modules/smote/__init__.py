"""SMOTE as a custom TFX component: rebalances the transformed train split only."""

from modules.smote.component import Smote

__all__ = ["Smote"]
