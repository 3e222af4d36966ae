"""`lesionlens report`: the paper's ablation grid, run and written up as one report."""
