"""The model card of a pushed model: what it is, what it was tested on, where it fails.
`card.py` builds it from the run's records (pure functions); `component.py` is the pipeline
step after Pusher that writes it into the pushed version's assets.extra/."""
