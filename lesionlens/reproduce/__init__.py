"""`lesionlens reproduce`: the paper's BUSI table in one command. Ingest with the paper's
protocol (`source`), the `busi-paper` profile through local_runner's own run, then this run's
ORACLE and deployable figures beside the paper's (`table`), with the time per image measured
on the served model (`timing`)."""
